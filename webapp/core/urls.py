from django.urls import path

from webapp.core.apis_auth import AuthTokenCreateApi

urlpatterns = [
    path("token/", AuthTokenCreateApi.as_view(), name="token"),
]
