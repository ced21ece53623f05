"""Writes about workers: heartbeats, and the sweep every worker runs periodically (workers/heartbeat.py) so that
nothing accepted is lost:

- a running job no live worker holds (its worker was killed, or its task ended without recording an outcome) is
  failed, or requeued once with ``DELTAVAULT_ORPHAN_REQUEUE`` (``webapp.jobs.services.job_orphan_recover``);
- a queued job with no broker message behind it (the broker lost it, or the task gave up on a database error) is
  sent again (``webapp.jobs.services.job_enqueue``); running it twice is impossible because a worker claims the row
  only from ``queued`` (``job_run``).

Several workers may sweep at once: every transition is a conditional update on the row.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from webapp.jobs.models import Worker
from webapp.jobs.services import job_enqueue, job_orphan_recover
from webapp.jobs.worker_selectors import jobs_orphaned, jobs_queued_unsent

logger = logging.getLogger(__name__)

# Rows of workers silent for this long are deleted (their jobs keep their history; Job.worker becomes null).
WORKER_FORGET_AFTER = timedelta(days=1)


@transaction.atomic
def worker_heartbeat(*, name: str, hostname: str, pid: int | None, queues: list[str], device: dict,
                     held_jobs: list[int], at: datetime | None = None) -> Worker:
    """Record that worker ``name`` is alive at ``at`` (when ``held_jobs`` was snapshotted; default now)."""
    worker, _ = Worker.objects.update_or_create(name=name, defaults={
        "hostname": hostname, "pid": pid, "queues": sorted(queues), "device": device,
        "held_jobs": sorted(set(held_jobs)), "last_heartbeat": at or timezone.now(),
    })
    return worker


def worker_stopped(*, name: str) -> None:
    """A worker that shuts down cleanly leaves the list at once."""
    Worker.objects.filter(name=name).delete()


def jobs_sweep(*, now: datetime | None = None) -> dict:
    """Recover running jobs no live worker holds; forget long-dead workers. Returns what it did."""
    now = now or timezone.now()
    recovered = {}
    for job in jobs_orphaned(now=now):
        outcome = job_orphan_recover(job=job)
        if outcome is not None:
            recovered[job.pk] = outcome.status
            logger.warning("job %s: its worker is gone; now %s", job.pk, outcome.status)
    Worker.objects.filter(last_heartbeat__lt=now - WORKER_FORGET_AFTER).delete()
    return recovered


def jobs_reconcile(*, pending_task_ids: set[str], now: datetime | None = None) -> list[int]:
    """Send again the queued jobs whose broker message is gone. Returns their ids."""
    sent = []
    for job in jobs_queued_unsent(pending_task_ids=pending_task_ids, now=now):
        logger.warning("job %s is queued but its broker message is gone: sending it again", job.pk)
        job_enqueue(job_id=job.pk)
        sent.append(job.pk)
    return sent
