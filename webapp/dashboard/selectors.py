"""Reads the dashboard needs beyond the apps' selectors (composed from them)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from webapp.jobs.models import Job
from webapp.jobs.selectors import job_list
from webapp.registry.selectors import artifact_training_label
from webapp.teams.models import Team
from webapp.teams.selectors import team_current_for_user

def current_team(request: HttpRequest) -> Team | None:
    """The user's current team (chosen in the header; kept with the membership, so REST calls without a team use
    it too). Joining a team never changes it."""
    return team_current_for_user(user=request.user)


def api_token_get(*, user: AbstractBaseUser) -> Token | None:
    return Token.objects.filter(user=user).first()


def _artifact_label(artifact) -> str:
    """The codec id, and for codecs that train while compressing (a ``steps`` option) whether the artifact is
    untrained (BitDelta-Initial) or trained, so both show side by side."""
    return artifact_training_label(artifact) or artifact.codec_id


def model_perplexity(*, team: Team, model_id: int) -> float | None:
    """The perplexity of the latest successful evaluate job of a registered model, if any."""
    jobs = job_list(team=team, filters={"kind": [Job.Kind.EVALUATE], "status": [Job.Status.SUCCEEDED]})
    for job in jobs.filter(model_id=model_id)[:1]:
        value = (job.metrics or {}).get("perplexity")
        return float(value) if isinstance(value, (int, float)) else None
    return None


def store_jobs_in_flight(*, team: Team) -> dict[int, Job]:
    """Model id -> its queued or running store job (pages link it instead of offering "Store compressed" again)."""
    jobs = job_list(team=team, filters={"kind": [Job.Kind.STORE], "status": [Job.Status.QUEUED, Job.Status.RUNNING]})
    return {job.model_id: job for job in jobs if job.model_id}
