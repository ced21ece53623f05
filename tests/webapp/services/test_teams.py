import pytest
from django.core.exceptions import PermissionDenied

from tests.factories import user_create
from webapp.core.exceptions import ApplicationError
from webapp.teams.models import Membership, Team
from webapp.teams.selectors import membership_role, team_get_for_user, team_list_for_user, team_resolve_for_user
from webapp.teams.services import membership_add, membership_remove, membership_role_set, team_choose, team_create

pytestmark = pytest.mark.django_db


class TeamCreateTests:
    def test_owner_becomes_admin(self):
        owner = user_create()
        team = team_create(name="Research Lab", owner=owner)
        assert team.slug == "research-lab"
        assert membership_role(user=owner, team=team) == Membership.Role.ADMIN

    def test_duplicate_slug_is_refused_and_creates_nothing(self):
        owner = user_create()
        team_create(name="Lab", owner=owner)
        with pytest.raises(ApplicationError, match="already exists"):
            team_create(name="lab", owner=owner)
        with pytest.raises(ApplicationError, match="letter or digit"):
            team_create(name="!!!", owner=owner)
        assert Team.objects.count() == 1 and Membership.objects.count() == 1


class MembershipTests:
    def test_admin_changes_roles(self, world):
        membership = membership_role_set(membership=Membership.objects.get(user=world["victor"]), role="member",
                                         by=world["alice"])
        assert membership.role == "member" and membership_role(user=world["victor"], team=world["acme"]) == "member"

    def test_only_admins_manage_members(self, world):
        victor = Membership.objects.get(user=world["victor"])
        for user in (world["mallory"], world["victor"], world["bob"]):
            with pytest.raises(PermissionDenied):
                membership_role_set(membership=victor, role="admin", by=user)
        assert membership_role(user=world["victor"], team=world["acme"]) == "viewer"

    def test_the_last_admin_stays(self, world):
        with pytest.raises(ApplicationError, match="at least one admin"):
            membership_remove(team=world["acme"], user=world["alice"], by=world["alice"])
        with pytest.raises(ApplicationError, match="at least one admin"):
            membership_role_set(membership=Membership.objects.get(user=world["alice"]), role="member",
                                by=world["alice"])
        membership_remove(team=world["acme"], user=world["victor"], by=world["alice"])
        assert membership_role(user=world["victor"], team=world["acme"]) is None

    def test_anyone_may_leave(self, world):
        membership_remove(team=world["acme"], user=world["mallory"], by=world["mallory"])
        assert membership_role(user=world["mallory"], team=world["acme"]) is None


class TeamSelectorTests:
    def test_users_see_only_their_teams(self, world):
        assert list(team_list_for_user(user=world["alice"])) == [world["acme"]]
        with pytest.raises(Exception) as info:
            team_get_for_user(user=world["alice"], slug="other")
        assert info.type.__name__ == "Http404"

    def test_resolve_uses_the_current_team_when_none_is_named(self, world):
        assert team_resolve_for_user(user=world["bob"], slug=None) == world["other"]
        membership_add(team=world["other"], user=world["alice"], role="viewer")
        # in several teams: the current one (the one joined first until another is chosen)
        assert team_resolve_for_user(user=world["alice"], slug=None) == world["acme"]
        team_choose(user=world["alice"], team=world["other"])
        assert team_resolve_for_user(user=world["alice"], slug=None) == world["other"]
        assert team_resolve_for_user(user=world["alice"], slug="acme") == world["acme"]
        with pytest.raises(ApplicationError, match="not a member"):
            team_resolve_for_user(user=user_create(), slug=None)
