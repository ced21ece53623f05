"""Reads the dashboard needs beyond the apps' selectors (composed from them)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from webapp.jobs.models import Job
from webapp.jobs.selectors import job_list
from webapp.registry.models import Pair
from webapp.registry.selectors import artifact_list
from webapp.teams.models import Team
from webapp.teams.selectors import team_current_for_user

def current_team(request: HttpRequest) -> Team | None:
    """The user's current team (chosen in the header; kept with the membership, so REST calls without a team use
    it too). Joining a team never changes it."""
    return team_current_for_user(user=request.user)


def api_token_get(*, user: AbstractBaseUser) -> Token | None:
    return Token.objects.filter(user=user).first()


def pair_comparison(*, pair: Pair) -> list[dict]:
    """One row per artifact of the pair: codec, ratio, speed, verification, perplexity (best ratio first)."""
    rows = []
    for artifact in artifact_list(team=pair.team, filters={"pair": pair.pk}):
        metrics = artifact.metrics or {}
        rows.append({
            "artifact": artifact,
            "codec": artifact.codec_id,
            "label": _artifact_label(artifact),
            "lossless": metrics.get("lossless"),
            "ratio": artifact.ratio,
            "mb_per_s": metrics.get("mb_per_s"),
            "seconds": metrics.get("seconds"),
            "verification": artifact.verification,
            "perplexity": artifact.perplexity,
            "compressed_bytes": artifact.compressed_bytes,
            "original_bytes": artifact.original_bytes,
        })
    rows.sort(key=lambda r: -(r["ratio"] or 0))
    return rows


def _artifact_label(artifact) -> str:
    """The codec id, and for codecs that train while compressing (a ``steps`` option) whether the artifact is
    untrained (BitDelta-Initial) or trained, so both show side by side."""
    steps = (artifact.codec_config or {}).get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int):
        return artifact.codec_id
    return f"{artifact.codec_id} initial" if steps == 0 else f"{artifact.codec_id} distilled ({steps} steps)"


def model_perplexity(*, team: Team, model_id: int) -> float | None:
    """The perplexity of the latest successful evaluate job of a registered model, if any."""
    jobs = job_list(team=team, filters={"kind": [Job.Kind.EVALUATE], "status": [Job.Status.SUCCEEDED]})
    for job in jobs.filter(model_id=model_id)[:1]:
        value = (job.metrics or {}).get("perplexity")
        return float(value) if isinstance(value, (int, float)) else None
    return None
