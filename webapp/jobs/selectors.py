import django_filters
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from webapp.jobs.models import Job
from webapp.registry.models import Artifact
from webapp.teams.models import Team


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Job.Status.choices)
    kind = django_filters.MultipleChoiceFilter(choices=Job.Kind.choices)
    pair = django_filters.NumberFilter(field_name="pair_id")
    artifact = django_filters.NumberFilter(field_name="artifact_id")
    queue = django_filters.ChoiceFilter(choices=Job.Queue.choices)

    class Meta:
        model = Job
        fields = ["status", "kind", "pair", "artifact", "queue"]


def _jobs() -> QuerySet[Job]:
    return Job.objects.select_related("team", "pair", "artifact", "model", "dataset", "created_by", "worker")


def job_list(*, team: Team | None = None, user: AbstractBaseUser | None = None,
             filters: dict | None = None) -> QuerySet[Job]:
    """Jobs of ``team``, or of every team ``user`` is in; ``filters``: status, kind, pair, artifact, queue."""
    qs = _jobs()
    if team is not None:
        qs = qs.filter(team=team)
    if user is not None:
        qs = qs.filter(team__memberships__user=user)
    if team is None and user is None:
        raise ValueError("job_list needs a team or a user")
    return JobFilter(filters or {}, qs).qs.order_by("-created_at", "-id")


def job_get(*, id: int, team: Team | None = None, user: AbstractBaseUser | None = None) -> Job:
    """The job, if it belongs to ``team`` (or one of ``user``'s teams); Http404 otherwise."""
    qs = _jobs()
    if team is not None:
        qs = qs.filter(team=team)
    if user is not None:
        qs = qs.filter(team__memberships__user=user)
    if team is None and user is None:
        raise ValueError("job_get needs a team or a user")
    return get_object_or_404(qs, pk=id)


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def job_state(job: Job) -> dict:
    """Everything the UI shows about a job, JSON-serialisable. Websocket messages carry exactly this."""
    output_artifact_id = Artifact.objects.filter(job_id=job.pk).values_list("pk", flat=True).first()
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "queue": job.queue,
        "progress": round(float(job.progress), 2),
        "stage": job.stage,
        "metrics": job.metrics or {},
        "error": job.error,
        "log_tail": job.log_tail,
        "codec": job.codec_id,
        "codec_config": job.codec_config or {},
        "options": job.options or {},
        "pair_id": job.pair_id,
        "model_id": job.model_id,
        "dataset_id": job.dataset_id,
        "input_artifact_id": job.artifact_id,
        "artifact_id": output_artifact_id,
        "retry_of_id": job.retry_of_id,
        "cancel_requested": job.cancel_requested,
        "worker": job.worker.name if job.worker_id and job.worker else None,
        "attempts": job.attempts,
        "team": job.team.slug,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }
