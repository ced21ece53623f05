"""Reads about workers: which are live, which queues they serve, which running jobs no live worker holds.

A worker is live while its last heartbeat is younger than ``DELTAVAULT_WORKER_TIMEOUT`` seconds. Each heartbeat
carries the ids of the jobs the worker holds (running, or waiting for a retry), snapshotted when the heartbeat was
taken; a job is claimed by a worker (``Job.worker``) only after the worker accepted its message, so a heartbeat
taken after the claim that does not list the job means the worker no longer runs it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from webapp.jobs.models import Job, Worker

# Clock slack between a heartbeat's snapshot and a claim written by another process of the same worker.
CLAIM_SLACK = timedelta(seconds=1)


def _live_since(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(seconds=settings.DELTAVAULT_WORKER_TIMEOUT)


def worker_list_live(*, now: datetime | None = None) -> QuerySet[Worker]:
    """Live workers, by name, each with ``current_jobs``: its running jobs (with their team)."""
    running = Job.objects.filter(status=Job.Status.RUNNING).select_related("team").order_by("pk")
    return (Worker.objects.filter(last_heartbeat__gte=_live_since(now)).order_by("name")
            .prefetch_related(Prefetch("jobs", queryset=running, to_attr="current_jobs")))


def worker_list_live_for_user(*, user) -> list[Worker]:
    """Live workers as ``user`` may see them: ``current_jobs`` keeps only the jobs of the user's teams;
    ``running_jobs`` counts them all."""
    from webapp.teams.models import Membership

    teams = set(Membership.objects.filter(user=user).values_list("team_id", flat=True))
    workers = list(worker_list_live())
    for worker in workers:
        worker.running_jobs = len(worker.current_jobs)
        worker.current_jobs = [job for job in worker.current_jobs if job.team_id in teams]
    return workers


def worker_queues_online(*, now: datetime | None = None) -> set[str]:
    """The queues at least one live worker consumes from."""
    queues: set[str] = set()
    for names in Worker.objects.filter(last_heartbeat__gte=_live_since(now)).values_list("queues", flat=True):
        queues.update(names or [])
    return queues


def worker_gpu_online(*, now: datetime | None = None) -> bool:
    """Whether a live worker that serves the gpu queue has a GPU torch can use."""
    live = Worker.objects.filter(last_heartbeat__gte=_live_since(now))
    return any(Job.Queue.GPU in (w.queues or []) and (w.device or {}).get("gpu_name") for w in live)


def job_orphaned(*, job: Job, now: datetime | None = None) -> bool:
    """Whether ``job`` is running but no live worker holds it: its worker stopped answering, or its worker's
    heartbeats since the claim no longer list it (the task ended without recording an outcome). A running job
    without a worker (run in-process) counts once it started longer ago than the worker timeout."""
    if job.status != Job.Status.RUNNING:
        return False
    now = now or timezone.now()
    started = job.started_at or job.created_at
    worker = job.worker
    if worker is None:
        return started < _live_since(now)
    if worker.last_heartbeat < _live_since(now):
        return True
    return worker.last_heartbeat > started + CLAIM_SLACK and job.pk not in (worker.held_jobs or [])


def jobs_orphaned(*, now: datetime | None = None) -> list[Job]:
    """Running jobs that no live worker holds (see :func:`job_orphaned`)."""
    running = Job.objects.filter(status=Job.Status.RUNNING).select_related("worker", "team")
    return [job for job in running if job_orphaned(job=job, now=now)]


def jobs_queued_unsent(*, pending_task_ids: set[str], now: datetime | None = None) -> list[Job]:
    """Queued jobs older than ``DELTAVAULT_RECONCILE_GRACE`` seconds whose broker message is not among
    ``pending_task_ids`` (waiting in a queue or delivered and not yet acknowledged)."""
    before = (now or timezone.now()) - timedelta(seconds=settings.DELTAVAULT_RECONCILE_GRACE)
    queued = Job.objects.filter(status=Job.Status.QUEUED, created_at__lt=before).select_related("team")
    return [job for job in queued.order_by("pk") if job.celery_task_id not in pending_task_ids]


def job_queue_warning(*, job: Job, online: set[str] | None = None) -> str:
    """A sentence when the unfinished ``job`` waits on a queue no live worker serves; "" otherwise."""
    if job.is_terminal:
        return ""
    online = worker_queues_online() if online is None else online
    if job.queue in online:
        return ""
    return (f"No live worker serves the {job.queue} queue: the job waits until one starts "
            f"(see the workers page).")
