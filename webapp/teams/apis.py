from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from webapp.core.apis import Api
from webapp.core.exceptions import ApplicationError
from webapp.teams.models import Membership
from webapp.teams.selectors import membership_list, membership_role, team_get_for_user, team_list_for_user
from webapp.teams.services import membership_add_by_username, membership_remove, team_create


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


class TeamMemberAddApi(Api):
    """Add a user to the team, or change their role (team admins only)."""

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)

    class OutputSerializer(_MemberOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request, slug: str):
        team = team_get_for_user(user=request.user, slug=slug)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = membership_add_by_username(team=team, by=request.user, **serializer.validated_data)
        return Response(self.OutputSerializer(membership).data, status=status.HTTP_201_CREATED)


class TeamMemberRemoveApi(Api):
    """Remove a user from the team (team admins; anyone may leave)."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, slug: str, username: str):
        team = team_get_for_user(user=request.user, slug=slug)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise ApplicationError(f"No user named {username!r}.")
        membership_remove(team=team, user=user, by=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
