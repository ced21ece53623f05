from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from webapp.core.exceptions import ApplicationError
from webapp.core.live import user_sockets_recheck
from webapp.teams.models import Invitation, Membership, Team
from webapp.teams.selectors import membership_role, user_can_write, user_is_team_admin


def team_require_write(*, user: AbstractBaseUser, team: Team) -> None:
    """Members and admins may change a team's things; viewers may only look (PermissionDenied -> 403)."""
    if not user_can_write(user=user, team=team):
        raise PermissionDenied("Your role in this team does not allow changes (viewers can only read).")


def team_require_admin(*, user: AbstractBaseUser, team: Team, action: str = "manage its members") -> None:
    if not user_is_team_admin(user=user, team=team):
        raise PermissionDenied(f"Only the team's admins can {action}.")


# Team pages live at /teams/<slug>/: these slugs are other pages.
RESERVED_SLUGS = frozenset({"new", "switch"})


@transaction.atomic
def team_create(*, name: str, owner: AbstractBaseUser, slug: str | None = None) -> Team:
    slug = slugify(slug or name)[:60]
    if not slug:
        raise ApplicationError("A team name needs at least one letter or digit.")
    if slug in RESERVED_SLUGS:
        raise ApplicationError(f"The slug '{slug}' is reserved; choose another name.", extra={"slug": slug})
    if Team.objects.filter(slug=slug).exists():
        raise ApplicationError(f"A team with the slug '{slug}' already exists.", extra={"slug": slug})
    team = Team(name=name.strip(), slug=slug)
    team.full_clean()
    team.save()
    membership = Membership(user=owner, team=team, role=Membership.Role.ADMIN)
    membership.full_clean()
    membership.save()
    return team


def _role_check(role: str) -> None:
    if role not in Membership.Role.values:
        raise ApplicationError(f"Unknown role {role!r}; one of {', '.join(Membership.Role.values)}.")


@transaction.atomic
def membership_add(*, team: Team, user: AbstractBaseUser, role: str = Membership.Role.MEMBER) -> Membership:
    """Make ``user`` a member of ``team`` (or change their role). No permission check: users join a team by
    creating it or by accepting an invitation (``invitation_accept``); this is what those call."""
    _role_check(role)
    membership = Membership.objects.filter(team=team, user=user).first()
    if membership is None:
        membership = Membership(team=team, user=user, role=role)
    else:
        if membership.role == Membership.Role.ADMIN and role != Membership.Role.ADMIN:
            _require_another_admin(team=team, user=user)
        membership.role = role
    membership.full_clean()
    membership.save()
    return membership


@transaction.atomic
def membership_role_set(*, membership: Membership, role: str, by: AbstractBaseUser) -> Membership:
    """Change a member's role (team admins only; a team keeps at least one admin)."""
    team_require_admin(user=by, team=membership.team)
    return membership_add(team=membership.team, user=membership.user, role=role)


@transaction.atomic
def team_choose(*, user: AbstractBaseUser, team: Team) -> None:
    """Make ``team`` the user's current team (the header's choice; the REST default when no team is named)."""
    if not Membership.objects.filter(user=user, team=team).update(chosen_at=timezone.now()):
        raise ApplicationError("You are not a member of that team.")


# ---- invitations ---------------------------------------------------------------------------------------------
@transaction.atomic
def invitation_create(*, team: Team, username: str, role: str = Membership.Role.MEMBER,
                      by: AbstractBaseUser) -> Invitation:
    """Invite ``username`` to ``team`` with ``role`` (team admins only). The answer is the same whether or not
    such a user exists; a second invitation to the same name replaces the pending one's role."""
    team_require_admin(user=by, team=team)
    _role_check(role)
    username = (username or "").strip()
    if not username:
        raise ApplicationError("A username is required.")
    if Membership.objects.filter(team=team, user__username=username).exists():
        raise ApplicationError(f"{username!r} is already in this team; change their role instead.")
    invitation = Invitation.objects.select_for_update().filter(
        team=team, username=username, status=Invitation.Status.PENDING).first()
    if invitation is None:
        invitation = Invitation(team=team, username=username)
    invitation.role = role
    invitation.invited_by = by
    invitation.full_clean()
    invitation.save()
    return invitation


def _invitation_close(invitation: Invitation, status: str) -> Invitation:
    closed = Invitation.objects.filter(pk=invitation.pk, status=Invitation.Status.PENDING).update(
        status=status, responded_at=timezone.now())
    if not closed:
        raise ApplicationError("The invitation is no longer pending.")
    invitation.refresh_from_db()
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: AbstractBaseUser) -> Membership:
    """The invitee joins the team with the invited role. Their current team does not change (unless they had
    none)."""
    if invitation.username != user.get_username():
        raise PermissionDenied("This invitation is for someone else.")
    _invitation_close(invitation, Invitation.Status.ACCEPTED)
    if Membership.objects.filter(team=invitation.team, user=user).exists():
        return Membership.objects.get(team=invitation.team, user=user)
    return membership_add(team=invitation.team, user=user, role=invitation.role)


@transaction.atomic
def invitation_decline(*, invitation: Invitation, user: AbstractBaseUser) -> Invitation:
    if invitation.username != user.get_username():
        raise PermissionDenied("This invitation is for someone else.")
    return _invitation_close(invitation, Invitation.Status.DECLINED)


@transaction.atomic
def invitation_cancel(*, invitation: Invitation, by: AbstractBaseUser) -> Invitation:
    team_require_admin(user=by, team=invitation.team)
    return _invitation_close(invitation, Invitation.Status.CANCELLED)


@transaction.atomic
def membership_remove(*, team: Team, user: AbstractBaseUser, by: AbstractBaseUser | None = None) -> None:
    if by is not None and by.pk != user.pk:
        team_require_admin(user=by, team=team)
    role = membership_role(user=user, team=team)
    if role is None:
        raise ApplicationError("That user is not in this team.")
    if role == Membership.Role.ADMIN:
        _require_another_admin(team=team, user=user)
    Membership.objects.filter(team=team, user=user).delete()
    user_sockets_recheck(user_id=user.pk)  # her open sockets on the team's jobs close within seconds


def _require_another_admin(*, team: Team, user: AbstractBaseUser) -> None:
    others = Membership.objects.filter(team=team, role=Membership.Role.ADMIN).exclude(user=user)
    if not others.exists():
        raise ApplicationError("A team needs at least one admin.")
