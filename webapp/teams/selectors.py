from django.contrib.auth.models import AbstractBaseUser
from django.db.models import F, QuerySet
from django.http import Http404

from webapp.core.exceptions import ApplicationError
from webapp.teams.models import Invitation, Membership, Team

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


def team_current_for_user(*, user: AbstractBaseUser) -> Team | None:
    """The user's current team: the one they chose last (header, ``team_choose``), else the team they joined first.
    Joining another team (accepting an invitation) never changes it."""
    if not user.is_authenticated:
        return None
    membership = (Membership.objects.filter(user=user).select_related("team")
                  .order_by(F("chosen_at").desc(nulls_last=True), "created_at", "id").first())
    return membership.team if membership else None


def team_resolve_for_user(*, user: AbstractBaseUser, slug: str | None) -> Team:
    """The team named by ``slug``, or the user's current team when no slug is given."""
    if slug:
        return team_get_for_user(user=user, slug=slug)
    team = team_current_for_user(user=user)
    if team is None:
        raise ApplicationError("You are not a member of any team.")
    return team


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


def invitation_list_for_team(*, team: Team) -> QuerySet[Invitation]:
    """The team's pending invitations (what its admins see)."""
    return Invitation.objects.filter(team=team, status=Invitation.Status.PENDING).select_related("invited_by")


def invitation_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Invitation]:
    """Pending invitations addressed to the user's username."""
    if not user.is_authenticated:
        return Invitation.objects.none()
    return (Invitation.objects.filter(username=user.get_username(), status=Invitation.Status.PENDING)
            .select_related("team", "invited_by"))


def invitation_get_for_user(*, user: AbstractBaseUser, id: int) -> Invitation:
    """A pending invitation addressed to the user; Http404 for any other."""
    invitation = invitation_list_for_user(user=user).filter(pk=id).first()
    if invitation is None:
        raise Http404("No such invitation.")
    return invitation


def invitation_get_for_team(*, team: Team, id: int) -> Invitation:
    invitation = invitation_list_for_team(team=team).filter(pk=id).first()
    if invitation is None:
        raise Http404("No such invitation.")
    return invitation


def member_get(*, team: Team, username: str) -> Membership:
    """The membership of ``username`` in ``team``; Http404 when there is none (whether or not the user exists)."""
    membership = Membership.objects.filter(team=team, user__username=username).select_related("user").first()
    if membership is None:
        raise Http404("That user is not in this team.")
    return membership
