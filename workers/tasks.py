"""Thin tasks: take ids, load rows, call services. No business logic here."""

import logging

from celery import Task, shared_task
from celery.signals import task_failure

logger = logging.getLogger(__name__)


def _fail_job(job_id, exc, einfo) -> None:
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_fail

    job = Job.objects.filter(pk=job_id).select_related("team").first()
    if job is not None:
        job_fail(job=job, error=f"{type(exc).__name__}: {exc}", log=str(einfo) if einfo else "")


class JobTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        """Whatever escaped ``job_run`` (a lost database connection, a bug) marks the job failed."""
        _fail_job(args[0] if args else kwargs.get("job_id"), exc, einfo)


@shared_task(bind=True, base=JobTask, name="workers.tasks.run_job")
def run_job(self, job_id: int) -> dict:
    """Run one Job row (``webapp.jobs.services.job_run``) and return its final status."""
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_run

    job = Job.objects.select_related("team").filter(pk=job_id).first()
    if job is None:
        logger.warning("run_job: job %s does not exist (deleted?)", job_id)
        return {"job_id": job_id, "status": "missing"}
    job = job_run(job=job)
    return {"job_id": job.pk, "status": job.status}


@task_failure.connect(sender=run_job)
def run_job_lost(sender=None, task_id=None, exception=None, args=None, kwargs=None, einfo=None, **_):
    """A pool process that dies mid-job (killed, out of memory, hard time limit) never reaches ``on_failure``;
    the worker's main process sends ``task_failure`` instead. Marking twice is harmless (job_fail skips
    finished jobs)."""
    from celery.exceptions import TimeLimitExceeded, WorkerLostError

    if isinstance(exception, (WorkerLostError, TimeLimitExceeded)):
        _fail_job(args[0] if args else (kwargs or {}).get("job_id"), exception, einfo)
