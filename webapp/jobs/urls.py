from django.urls import path

from webapp.jobs.apis import JobCancelApi, JobCollectionApi, JobItemApi, JobPinApi, JobRetryApi

urlpatterns = [
    path("", JobCollectionApi.as_view(), name="list"),
    path("<int:id>/", JobItemApi.as_view(), name="detail"),
    path("<int:id>/pin/", JobPinApi.as_view(), name="pin"),
    path("<int:id>/cancel/", JobCancelApi.as_view(), name="cancel"),
    path("<int:id>/retry/", JobRetryApi.as_view(), name="retry"),
]
