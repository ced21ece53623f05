"""WebSocket consumers: live job state for one job and for a team's job list.

Both are sync consumers (the ORM is sync). Every refusal is a close code after the handshake (a browser cannot
read an HTTP status of a refused handshake, and would retry it for ever):

- 4401: not logged in (no session, or an unknown or revoked token);
- 4403: access was withdrawn while the socket was open (removed from the team, token revoked, user deactivated);
- 4404: no such job or team, or one outside the user's teams (the same answer for both), or an unknown path.

Clients must not reconnect after a 44xx close (``static/dashboard/live.js`` stops). On connect the socket joins
its group and ``user-<id>``, then gets the current state built from the rows; every ``job.update`` event sent to
the group by ``webapp.jobs.reporter.job_progress_publish`` is forwarded as ``{"type": "job.update", "job": {...}}``.
An ``access.recheck`` event on ``user-<id>`` (``webapp.core.live.user_sockets_recheck``, sent when a membership
or a token goes) makes each of the user's sockets check its access again and close with 4403 when it is gone.
"""

from __future__ import annotations

import time

from asgiref.sync import async_to_sync
from channels.generic.websocket import JsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.http import Http404

from webapp.core.live import user_group
from webapp.jobs.selectors import job_get, job_list, job_state
from webapp.teams.selectors import team_get_for_user

CLOSE_UNAUTHENTICATED = 4401
CLOSE_ACCESS_REVOKED = 4403
CLOSE_NOT_FOUND = 4404
# How many recent jobs a team subscriber gets on connect.
TEAM_INITIAL_JOBS = 50
# An open socket checks its access again before forwarding an update at least this often (seconds).
ACCESS_RECHECK_SECONDS = 30.0


class _RefusingConsumer(JsonWebsocketConsumer):
    def refuse(self, code: int) -> None:
        """Complete the handshake, then close with ``code`` (closing before ``accept`` is an HTTP 403)."""
        self.accept()
        self.close(code=code)


class _JobEventsConsumer(_RefusingConsumer):
    groups_joined: tuple[str, ...] = ()
    checked_at = 0.0

    def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.refuse(CLOSE_UNAUTHENTICATED)
            return
        try:
            group, initial = self.subscribe(user)
        except Http404:
            self.refuse(CLOSE_NOT_FOUND)
            return
        self.groups_joined = (group, user_group(user.pk))
        for name in self.groups_joined:
            async_to_sync(self.channel_layer.group_add)(name, self.channel_name)
        self.accept()
        self.checked_at = time.monotonic()
        self.send_json(initial)

    def subscribe(self, user) -> tuple[str, dict]:
        """The group to join and the first message; Http404 when the user may not see it."""
        raise NotImplementedError

    def disconnect(self, code):
        for name in self.groups_joined:
            async_to_sync(self.channel_layer.group_discard)(name, self.channel_name)
        self.groups_joined = ()

    def _still_allowed(self) -> bool:
        from rest_framework.authtoken.models import Token

        user = get_user_model().objects.filter(pk=self.scope["user"].pk, is_active=True).first()
        if user is None:
            return False
        token = self.scope.get("auth_token")
        if token is not None and not Token.objects.filter(key=token, user=user).exists():
            return False
        try:
            self.subscribe(user)
        except Http404:
            return False
        return True

    def _revoke(self) -> None:
        self.disconnect(CLOSE_ACCESS_REVOKED)  # leave the groups now: not one more update reaches the socket
        self.close(code=CLOSE_ACCESS_REVOKED)

    def access_recheck(self, event):
        if not self._still_allowed():
            self._revoke()

    def receive_json(self, content, **kwargs):
        # The stream is one-way; a client may ping to keep proxies from closing an idle socket.
        if isinstance(content, dict) and content.get("type") == "ping":
            self.send_json({"type": "pong"})

    def job_update(self, event):
        # Access is pushed to be re-checked when it changes (access.recheck); should that message be lost, an
        # update still checks again once ACCESS_RECHECK_SECONDS have passed since the last check.
        if time.monotonic() - self.checked_at > ACCESS_RECHECK_SECONDS:
            self.checked_at = time.monotonic()
            if not self._still_allowed():
                self._revoke()
                return
        self.send_json({"type": "job.update", "job": event["job"]})


class JobConsumer(_JobEventsConsumer):
    """``/ws/jobs/<id>/``: one job."""

    def subscribe(self, user):
        job = job_get(id=int(self.scope["url_route"]["kwargs"]["job_id"]), user=user)
        return f"job-{job.pk}", {"type": "job.state", "job": job_state(job)}


class TeamJobsConsumer(_JobEventsConsumer):
    """``/ws/teams/<slug>/jobs/``: every job of a team (the recent ones first, then all updates)."""

    def subscribe(self, user):
        team = team_get_for_user(user=user, slug=self.scope["url_route"]["kwargs"]["slug"])
        jobs = [job_state(job) for job in job_list(team=team)[:TEAM_INITIAL_JOBS]]
        return f"team-{team.slug}", {"type": "jobs.state", "team": team.slug, "jobs": jobs}


class NotFoundConsumer(_RefusingConsumer):
    """Any other ``/ws/...`` path (``/ws/jobs/-1/``, an encoded slash in a slug): 4404, never a server error."""

    def connect(self):
        self.refuse(CLOSE_NOT_FOUND)
