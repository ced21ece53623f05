"""Helpers the APIs share to pick the team a request is about."""

from webapp.teams.models import Team
from webapp.teams.selectors import team_get_for_user, team_resolve_for_user


def request_team_for_write(request, slug: str | None) -> Team:
    """The team named by ``slug`` (404 if the user is not in it), or the user's only team."""
    return team_resolve_for_user(user=request.user, slug=slug)


def request_team_filter(request) -> Team | None:
    """The team of a list's ``?team=<slug>`` filter (404 if the user is not in it), or None for all their teams."""
    slug = request.query_params.get("team")
    return team_get_for_user(user=request.user, slug=slug) if slug else None
