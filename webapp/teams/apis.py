from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from webapp.core.apis import Api
from webapp.teams.models import Membership
from webapp.teams.selectors import (
    invitation_get_for_team,
    invitation_get_for_user,
    invitation_list_for_team,
    invitation_list_for_user,
    member_get,
    membership_list,
    membership_role,
    team_get_for_user,
    team_list_for_user,
)
from webapp.teams.services import (
    invitation_accept,
    invitation_cancel,
    invitation_create,
    invitation_decline,
    membership_remove,
    membership_role_set,
    team_create,
    team_require_admin,
)


class _TeamOutput(serializers.Serializer):
    slug = serializers.SlugField()
    name = serializers.CharField()
    role = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_role(self, team) -> str | None:
        return membership_role(user=self.context["request"].user, team=team)


class TeamListApi(Api):
    """The teams you are in, with your role in each."""

    class OutputSerializer(_TeamOutput):
        pass

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request):
        teams = team_list_for_user(user=request.user)
        return Response(self.OutputSerializer(teams, many=True, context={"request": request}).data)


class TeamCreateApi(Api):
    """Create a team; you become its admin."""

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        slug = serializers.SlugField(max_length=60, required=False)

    class OutputSerializer(_TeamOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        serializer = TeamCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        team = team_create(owner=request.user, **serializer.validated_data)
        return Response(TeamCreateApi.OutputSerializer(team, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class TeamCollectionApi(TeamListApi, TeamCreateApi):
    """``GET`` lists (TeamListApi), ``POST`` creates (TeamCreateApi)."""


class _MemberOutput(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()
    created_at = serializers.DateTimeField()


class TeamDetailApi(Api):
    class OutputSerializer(_TeamOutput):
        members = serializers.SerializerMethodField()

        def get_members(self, team) -> list[dict]:
            return _MemberOutput(membership_list(team=team), many=True).data

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, slug: str):
        team = team_get_for_user(user=request.user, slug=slug)
        return Response(self.OutputSerializer(team, context={"request": request}).data)


class TeamMemberUpdateApi(Api):
    """Change a member's role (team admins only). New members join by accepting an invitation."""

    class InputSerializer(serializers.Serializer):
        role = serializers.ChoiceField(choices=Membership.Role.choices)

    class OutputSerializer(_MemberOutput):
        pass

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def patch(self, request, slug: str, username: str):
        team = team_get_for_user(user=request.user, slug=slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = membership_role_set(membership=member_get(team=team, username=username), by=request.user,
                                         **serializer.validated_data)
        return Response(self.OutputSerializer(membership).data)


class TeamMemberRemoveApi(Api):
    """Remove a user from the team (team admins; anyone may leave)."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, slug: str, username: str):
        team = team_get_for_user(user=request.user, slug=slug)
        membership = member_get(team=team, username=username)
        membership_remove(team=team, user=membership.user, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamMemberApi(TeamMemberUpdateApi, TeamMemberRemoveApi):
    """``PATCH`` changes the role (TeamMemberUpdateApi), ``DELETE`` removes (TeamMemberRemoveApi)."""


# ---- invitations ---------------------------------------------------------------------------------------------
class _InvitationOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    team_name = serializers.CharField(source="team.name")
    username = serializers.CharField()
    role = serializers.CharField()
    status = serializers.CharField()
    invited_by = serializers.CharField(source="invited_by.username", allow_null=True, default=None)
    created_at = serializers.DateTimeField()


class TeamInvitationListApi(Api):
    """The team's pending invitations (team admins)."""

    class OutputSerializer(_InvitationOutput):
        pass

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request, slug: str):
        team = team_get_for_user(user=request.user, slug=slug)
        team_require_admin(user=request.user, team=team)
        return Response(self.OutputSerializer(invitation_list_for_team(team=team), many=True).data)


class TeamInvitationCreateApi(Api):
    """Invite a username to the team (team admins). The user joins only by accepting; the answer is the same
    whether or not an account with that name exists."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)

    class OutputSerializer(_InvitationOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request, slug: str):
        team = team_get_for_user(user=request.user, slug=slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation = invitation_create(team=team, by=request.user, **serializer.validated_data)
        return Response(self.OutputSerializer(invitation).data, status=status.HTTP_201_CREATED)


class TeamInvitationCollectionApi(TeamInvitationListApi, TeamInvitationCreateApi):
    """``GET`` lists (TeamInvitationListApi), ``POST`` invites (TeamInvitationCreateApi)."""


class TeamInvitationCancelApi(Api):
    """Withdraw a pending invitation (team admins)."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, slug: str, id: int):
        team = team_get_for_user(user=request.user, slug=slug)
        team_require_admin(user=request.user, team=team)
        invitation_cancel(invitation=invitation_get_for_team(team=team, id=id), by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InvitationListApi(Api):
    """Your pending invitations."""

    class OutputSerializer(_InvitationOutput):
        pass

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request):
        return Response(self.OutputSerializer(invitation_list_for_user(user=request.user), many=True).data)


class InvitationAcceptApi(Api):
    """Accept an invitation: you join the team with the role offered. Your current team does not change."""

    class OutputSerializer(_TeamOutput):
        pass

    @extend_schema(request=None, responses={200: OutputSerializer})
    def post(self, request, id: int):
        membership = invitation_accept(invitation=invitation_get_for_user(user=request.user, id=id),
                                       user=request.user)
        return Response(self.OutputSerializer(membership.team, context={"request": request}).data)


class InvitationDeclineApi(Api):
    """Decline an invitation."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request, id: int):
        invitation_decline(invitation=invitation_get_for_user(user=request.user, id=id), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
