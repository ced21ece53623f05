"""Thin tasks: take ids, load rows, call services. No business logic here."""

import logging
import time

from celery import Task, shared_task
from celery.signals import task_failure

logger = logging.getLogger(__name__)


# Waits between the failure hook's attempts to record a failure while the database is unreachable.
FAIL_HOOK_WAITS = (0.5, 1.0, 2.0)


def _fail_job(job_id, exc, einfo) -> None:
    """Record the failure; on a database error try again a few times. If the database stays unreachable the row
    keeps its state and the sweep recovers it (a running job no worker holds, or a queued one with no message)."""
    from django.db import connection

    from webapp.jobs.models import Job
    from webapp.jobs.services import TRANSIENT_DB_ERRORS, job_fail

    for wait in (*FAIL_HOOK_WAITS, None):
        try:
            job = Job.objects.filter(pk=job_id).select_related("team").first()
            if job is not None:
                job_fail(job=job, error=f"{type(exc).__name__}: {exc}", log=str(einfo) if einfo else "")
            return
        except TRANSIENT_DB_ERRORS:
            if wait is None:
                logger.exception("could not record the failure of job %s; the sweep will", job_id)
                return
            if connection.connection is not None and not connection.is_usable():
                connection.close()  # the next attempt reconnects
            time.sleep(wait)


class JobTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Whatever escaped ``job_run`` (a lost database connection, a bug) marks the job failed."""
        _fail_job(args[0] if args else kwargs.get("job_id"), exc, einfo)


def db_retry_countdown(retries: int) -> float:
    """1, 2, 4 … seconds, at most a minute."""
    return float(min(2 ** retries, 60))


@shared_task(bind=True, base=JobTask, name="workers.tasks.run_job")
def run_job(self, job_id: int) -> dict:
    """Run one Job row (``webapp.jobs.services.job_run``) and return its final status. A database error is
    retried with backoff (the retry is sent before this message is acknowledged)."""
    from django.conf import settings

    from webapp.jobs.models import Job
    from webapp.jobs.services import TRANSIENT_DB_ERRORS, job_run

    try:
        job = Job.objects.select_related("team").filter(pk=job_id).first()
        if job is None:
            logger.warning("run_job: job %s does not exist (deleted?)", job_id)
            return {"job_id": job_id, "status": "missing"}
        job = job_run(job=job, worker_name=self.request.hostname or "", resume=self.request.retries > 0)
    except TRANSIENT_DB_ERRORS as exc:  # the retry starts on a fresh connection (Celery's Django fixup)
        logger.warning("run_job %s: database error (%s); retrying", job_id, exc)
        raise self.retry(exc=exc, countdown=db_retry_countdown(self.request.retries),
                         max_retries=settings.DELTAVAULT_TASK_DB_RETRIES)
    return {"job_id": job.pk, "status": job.status}


@shared_task(name="workers.tasks.housekeeping")
def housekeeping() -> dict:
    """Periodic (Celery beat): expire restored copies (of jobs and of compressed models), remove artifact files
    and tensor store objects no row points at, and scratch folders of finished jobs."""
    from webapp.jobs.services import restored_expire, work_dirs_sweep
    from webapp.registry.services import artifact_storage_sweep, model_restored_expire, tensor_store_sweep

    return {"restored_expired": restored_expire(), "orphans_removed": artifact_storage_sweep(),
            "work_dirs_removed": work_dirs_sweep(), "model_copies_expired": model_restored_expire(),
            "tensor_objects_removed": tensor_store_sweep()}


@task_failure.connect(sender=run_job)
def run_job_lost(sender=None, task_id=None, exception=None, args=None, kwargs=None, einfo=None, **_):
    """A pool process that dies mid-job (killed, out of memory, hard time limit) never reaches ``on_failure``;
    the worker's main process sends ``task_failure`` instead. Marking twice is harmless (job_fail skips
    finished jobs)."""
    from celery.exceptions import TimeLimitExceeded, WorkerLostError

    if isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
        _fail_job(args[0] if args else (kwargs or {}).get("job_id"), exception, einfo)
