"""Reads the dashboard needs beyond the apps' selectors (composed from them)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from webapp.teams.models import Team
from webapp.teams.selectors import team_list_for_user

SESSION_TEAM_KEY = "deltavault_team"


def current_team(request: HttpRequest) -> Team | None:
    """The team chosen in the header (kept in the session), else the user's first team."""
    teams = list(team_list_for_user(user=request.user))
    slug = request.session.get(SESSION_TEAM_KEY)
    for team in teams:
        if team.slug == slug:
            return team
    return teams[0] if teams else None


def api_token_get(*, user: AbstractBaseUser) -> Token | None:
    return Token.objects.filter(user=user).first()
