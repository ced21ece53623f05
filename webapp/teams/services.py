from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils.text import slugify

from webapp.core.exceptions import ApplicationError
from webapp.core.live import user_sockets_recheck
from webapp.teams.models import Membership, Team
from webapp.teams.selectors import membership_role, user_can_write, user_is_team_admin


def team_require_write(*, user: AbstractBaseUser, team: Team) -> None:
    """Members and admins may change a team's things; viewers may only look (PermissionDenied -> 403)."""
    if not user_can_write(user=user, team=team):
        raise PermissionDenied("Your role in this team does not allow changes (viewers can only read).")


def team_require_admin(*, user: AbstractBaseUser, team: Team, action: str = "manage its members") -> None:
    if not user_is_team_admin(user=user, team=team):
        raise PermissionDenied(f"Only the team's admins can {action}.")


@transaction.atomic
def team_create(*, name: str, owner: AbstractBaseUser, slug: str | None = None) -> Team:
    slug = slugify(slug or name)[:60]
    if not slug:
        raise ApplicationError("A team name needs at least one letter or digit.")
    if Team.objects.filter(slug=slug).exists():
        raise ApplicationError(f"A team with the slug '{slug}' already exists.", extra={"slug": slug})
    team = Team(name=name.strip(), slug=slug)
    team.full_clean()
    team.save()
    membership = Membership(user=owner, team=team, role=Membership.Role.ADMIN)
    membership.full_clean()
    membership.save()
    return team


@transaction.atomic
def membership_add(
    *, team: Team, user: AbstractBaseUser, role: str = Membership.Role.MEMBER, by: AbstractBaseUser | None = None
) -> Membership:
    """Add ``user`` to ``team`` (or change their role). ``by`` (when given) must be an admin of the team."""
    if by is not None:
        team_require_admin(user=by, team=team)
    if role not in Membership.Role.values:
        raise ApplicationError(f"Unknown role {role!r}; one of {', '.join(Membership.Role.values)}.")
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


def membership_add_by_username(
    *, team: Team, username: str, role: str = Membership.Role.MEMBER, by: AbstractBaseUser | None = None
) -> Membership:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ApplicationError(f"No user named {username!r}.")
    return membership_add(team=team, user=user, role=role, by=by)


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
