from datetime import datetime, timedelta

import django_filters
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from webapp.jobs.metrics import metric_rows
from webapp.jobs.models import Job
from webapp.registry.models import Artifact
from webapp.teams.models import Team


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Job.Status.choices)
    kind = django_filters.MultipleChoiceFilter(choices=Job.Kind.choices)
    codec = django_filters.CharFilter(field_name="codec_config__id")
    pair = django_filters.NumberFilter(field_name="pair_id")
    model = django_filters.NumberFilter(method="filter_model")
    artifact = django_filters.NumberFilter(field_name="artifact_id")
    dataset = django_filters.NumberFilter(field_name="dataset_id")
    who = django_filters.CharFilter(field_name="created_by__username")
    queue = django_filters.ChoiceFilter(choices=Job.Queue.choices)
    q = django_filters.CharFilter(method="filter_search")

    class Meta:
        model = Job
        fields = ["status", "kind", "codec", "pair", "model", "artifact", "dataset", "who", "queue", "q"]

    def filter_model(self, queryset, name, value):
        """Jobs that used the model: evaluated it, or worked on a pair it is the base or fine-tune of."""
        return queryset.filter(Q(model_id=value) | Q(pair__base_id=value) | Q(pair__finetuned_id=value))

    def filter_search(self, queryset, name, value):
        """Free text: a job id (``42`` or ``#42``), or a word in the stage, error, codec, pair, model, dataset or
        creator."""
        value = value.strip()
        if not value:
            return queryset
        match = (Q(stage__icontains=value) | Q(error__icontains=value) | Q(codec_config__id__icontains=value)
                 | Q(pair__name__icontains=value) | Q(model__name__icontains=value)
                 | Q(dataset__name__icontains=value) | Q(created_by__username__icontains=value)
                 | Q(kind__icontains=value))
        if value.lstrip("#").isdigit():
            match |= Q(pk=int(value.lstrip("#")))
        return queryset.filter(match)


def _jobs() -> QuerySet[Job]:
    return Job.objects.select_related("team", "pair", "artifact", "artifact__pair", "model", "dataset", "created_by",
                                      "worker")


def job_list(*, team: Team | None = None, user: AbstractBaseUser | None = None,
             filters: dict | None = None) -> QuerySet[Job]:
    """Jobs of ``team``, or of every team ``user`` is in; ``filters``: status, kind, codec, pair, model, artifact,
    dataset, who (a username), queue, q (search)."""
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


def job_restored_expires_at(job: Job) -> datetime | None:
    """When a decompress job's restored copy will be removed (None: pinned, not finished, or none)."""
    if job.kind != Job.Kind.DECOMPRESS or job.pinned or job.status != Job.Status.SUCCEEDED or not job.finished_at:
        return None
    return job.finished_at + timedelta(hours=float(settings.DELTAVAULT_RESTORED_TTL_HOURS))


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
        "metrics_display": metric_rows(job.metrics),
        "error": job.error,
        "log_tail": job.log_tail,
        "codec": job.codec_id,
        "codec_config": job.codec_config or {},
        "options": job.options or {},
        "pair_id": job.pair_id,
        "pair_name": job.pair.name if job.pair_id else None,
        "model_id": job.model_id,
        "model_name": job.model.name if job.model_id else None,
        "dataset_id": job.dataset_id,
        "dataset_name": job.dataset.name if job.dataset_id else None,

        "gradient_set_id": job.gradient_set_id,
        "input_artifact_id": job.artifact_id,
        "input_artifact_label": job.artifact.label if job.artifact_id else None,
        "created_by": job.created_by.get_username() if job.created_by_id else None,
        "artifact_id": output_artifact_id,
        "retry_of_id": job.retry_of_id,
        "cancel_requested": job.cancel_requested,
        "worker": job.worker.name if job.worker_id and job.worker else None,
        "attempts": job.attempts,
        "pinned": job.pinned,
        "restored_expires_at": _iso(job_restored_expires_at(job)),
        "team": job.team.slug,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }
