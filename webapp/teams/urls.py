from django.urls import path

from webapp.teams.apis import TeamCollectionApi, TeamDetailApi, TeamMemberAddApi, TeamMemberRemoveApi

urlpatterns = [
    path("", TeamCollectionApi.as_view(), name="list"),
    path("<slug:slug>/", TeamDetailApi.as_view(), name="detail"),
    path("<slug:slug>/members/", TeamMemberAddApi.as_view(), name="member-add"),
    path("<slug:slug>/members/<str:username>/", TeamMemberRemoveApi.as_view(), name="member-remove"),
]
