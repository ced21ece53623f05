from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.core.exceptions import ApplicationError
from webapp.teams.models import Membership, Team

WRITE_ROLES = frozenset({Membership.Role.ADMIN, Membership.Role.MEMBER})


def team_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user).distinct().order_by("name")


def team_get_for_user(*, user: AbstractBaseUser, slug: str) -> Team:
    """The team with this slug, if the user is in it; Http404 otherwise (other teams do not exist for them)."""
    team = team_list_for_user(user=user).filter(slug=slug).first()
    if team is None:
        raise Http404("No such team.")
    return team


def team_resolve_for_user(*, user: AbstractBaseUser, slug: str | None) -> Team:
    """The team named by ``slug``, or the user's only team when no slug is given."""
    if slug:
        return team_get_for_user(user=user, slug=slug)
    teams = list(team_list_for_user(user=user)[:2])
    if len(teams) == 1:
        return teams[0]
    if not teams:
        raise ApplicationError("You are not a member of any team.")
    raise ApplicationError("You are in several teams: say which one with 'team' (its slug).")


def membership_role(*, user: AbstractBaseUser, team: Team) -> str | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, team=team).values_list("role", flat=True).first()


def membership_list(*, team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user").order_by("user__username")


def user_can_write(*, user: AbstractBaseUser, team: Team) -> bool:
    return membership_role(user=user, team=team) in WRITE_ROLES


def user_is_team_admin(*, user: AbstractBaseUser, team: Team) -> bool:
    return membership_role(user=user, team=team) == Membership.Role.ADMIN
