"""WebSocket consumers: live job state for one job and for a team's job list.

Both are sync consumers (the ORM is sync). On connect: refuse anonymous users (4401) and objects outside the
user's teams (4404, the same answer as for objects that do not exist); otherwise join the group, accept, and send
the current state built from the rows. Then every ``job.update`` event sent to the group by
``webapp.jobs.reporter.job_progress_publish`` is forwarded as ``{"type": "job.update", "job": {...}}``.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.generic.websocket import JsonWebsocketConsumer
from django.http import Http404

from webapp.jobs.selectors import job_get, job_list, job_state
from webapp.teams.selectors import team_get_for_user

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# How many recent jobs a team subscriber gets on connect.
TEAM_INITIAL_JOBS = 50


class _JobEventsConsumer(JsonWebsocketConsumer):
    group_name: str | None = None

    def _join(self, group: str) -> None:
        self.group_name = group
        async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        self.accept()

    def _user(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.close(code=CLOSE_UNAUTHENTICATED)
            return None
        return user

    def disconnect(self, code):
        if self.group_name is not None:
            async_to_sync(self.channel_layer.group_discard)(self.group_name, self.channel_name)
            self.group_name = None

    def receive_json(self, content, **kwargs):
        # The stream is one-way; a client may ping to keep proxies from closing an idle socket.
        if isinstance(content, dict) and content.get("type") == "ping":
            self.send_json({"type": "pong"})

    def job_update(self, event):
        self.send_json({"type": "job.update", "job": event["job"]})


class JobConsumer(_JobEventsConsumer):
    """``/ws/jobs/<id>/``: one job."""

    def connect(self):
        user = self._user()
        if user is None:
            return
        try:
            job = job_get(id=int(self.scope["url_route"]["kwargs"]["job_id"]), user=user)
        except Http404:
            self.close(code=CLOSE_NOT_FOUND)
            return
        self._join(f"job-{job.pk}")
        self.send_json({"type": "job.state", "job": job_state(job)})


class TeamJobsConsumer(_JobEventsConsumer):
    """``/ws/teams/<slug>/jobs/``: every job of a team (the recent ones first, then all updates)."""

    def connect(self):
        user = self._user()
        if user is None:
            return
        try:
            team = team_get_for_user(user=user, slug=self.scope["url_route"]["kwargs"]["slug"])
        except Http404:
            self.close(code=CLOSE_NOT_FOUND)
            return
        self._join(f"team-{team.slug}")
        jobs = [job_state(job) for job in job_list(team=team)[:TEAM_INITIAL_JOBS]]
        self.send_json({"type": "jobs.state", "team": team.slug, "jobs": jobs})
