from django.urls import path

from webapp.teams.apis import (
    InvitationAcceptApi,
    InvitationDeclineApi,
    InvitationListApi,
    TeamCollectionApi,
    TeamDetailApi,
    TeamInvitationCancelApi,
    TeamInvitationCollectionApi,
    TeamMemberApi,
)

urlpatterns = [
    path("", TeamCollectionApi.as_view(), name="list"),
    path("<slug:slug>/", TeamDetailApi.as_view(), name="detail"),
    path("<slug:slug>/members/<str:username>/", TeamMemberApi.as_view(), name="member"),
    path("<slug:slug>/invitations/", TeamInvitationCollectionApi.as_view(), name="invitation-list"),
    path("<slug:slug>/invitations/<int:id>/", TeamInvitationCancelApi.as_view(), name="invitation-cancel"),
]

# Mounted at /api/v1/invitations/: the invitations addressed to you.
invitation_urlpatterns = [
    path("", InvitationListApi.as_view(), name="list"),
    path("<int:id>/accept/", InvitationAcceptApi.as_view(), name="accept"),
    path("<int:id>/decline/", InvitationDeclineApi.as_view(), name="decline"),
]
