"""Job life cycle: submit, run, cancel, retry, fail. What each kind does is in ``webapp.jobs.runners``; progress
and publishing in ``webapp.jobs.reporter``.

``job_run`` never holds one transaction for the whole job: progress, status and the cancel flag must be visible
to other processes while it works. Writes use ``update_fields`` (or queryset updates) so a concurrent
``job_cancel`` (which sets ``cancel_requested``) is never overwritten.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path

import modelcodecs
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone
from modelcodecs.memory import peak_rss, reset_peak_rss

from webapp.core.exceptions import ApplicationError
from webapp.core.redact import redact_paths
from webapp.jobs.models import QUEUE_AUTO, Job, Worker
from webapp.jobs.reporter import JobReporter, job_progress_publish, log_tail
from webapp.jobs.runners import JOB_KINDS, JobInputs, job_restored_dir, job_work_dir
from webapp.jobs.selectors import job_restored_expires_at
from webapp.registry.models import Artifact, Dataset, GradientSet, ModelEntry, Pair
from webapp.registry.selectors import artifact_find_same_config
from webapp.registry.services import files_remove_on_commit
from webapp.teams.models import Team
from webapp.jobs.worker_selectors import job_orphaned, worker_gpu_online
from webapp.teams.services import team_require_admin, team_require_write
from workers.tasks import run_job as run_job_task

logger = logging.getLogger(__name__)

# Job options and their largest value: each is a positive integer.
JOB_OPTIONS = {"threads": 1024, "max_tokens": 10**9}
# Database errors a task retries (connection refused or lost, slots exhausted, pool timeout), as opposed to data
# errors (IntegrityError and the like), which are the job's own failure.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)


# ---- submit / cancel / retry / fail --------------------------------------------------------------------------
def _check_team(team: Team, inputs: JobInputs) -> None:
    for label in ("pair", "artifact", "model", "dataset", "gradient_set"):
        obj = getattr(inputs, label)
        if obj is not None and obj.team_id != team.pk:
            raise ApplicationError(f"The {label} belongs to another team.")


def _options_clean(options: dict | None) -> dict:
    if not isinstance(options or {}, dict):
        raise ApplicationError("options must be an object.")
    options = dict(options or {})
    for key, high in JOB_OPTIONS.items():
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high):
            raise ApplicationError(f"options.{key} must be an integer from 1 to {high}.")
    unknown = sorted(set(options) - set(JOB_OPTIONS))
    if unknown:
        raise ApplicationError(f"Unknown job option(s): {', '.join(unknown)}.")
    return options


def _describe(names: frozenset[str]) -> str:
    words = [name.replace("_", " ") for name in sorted(names)]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


@transaction.atomic
def job_submit(
    *,
    team: Team,
    user: AbstractBaseUser,
    kind: str,
    pair: Pair | None = None,
    artifact: Artifact | None = None,
    model: ModelEntry | None = None,
    dataset: Dataset | None = None,
    gradient_set: GradientSet | None = None,
    codec_config: dict | None = None,
    options: dict | None = None,
    queue: str = QUEUE_AUTO,
    retry_of: Job | None = None,
    repeat: bool = False,
) -> Job:
    """Validate, create the queued Job row and queue ``run_job`` on ``queue`` once the transaction commits.
    ``queue="auto"`` picks gpu for work that runs models when a live GPU worker serves it, else cpu.

    A compress job whose pair already has an artifact of the same codec config is refused unless ``repeat``:
    it would make the same artifact again (which the run recognises and does not store twice)."""
    team_require_write(user=user, team=team)
    inputs = JobInputs(pair=pair, artifact=artifact, model=model, dataset=dataset, codec_config=codec_config,
                       gradient_set=gradient_set)
    _check_team(team, inputs)
    if queue not in (*Job.Queue.values, QUEUE_AUTO):
        raise ApplicationError(f"Unknown queue {queue!r}; one of {', '.join([*Job.Queue.values, QUEUE_AUTO])}.")
    options = _options_clean(options)
    job_kind = JOB_KINDS.get(kind)
    if job_kind is None:
        raise ApplicationError(f"Unknown job kind {kind!r}; one of {', '.join(Job.Kind.values)}.")
    extra = inputs.given() - job_kind.inputs
    if extra:
        raise ApplicationError(f"A {kind} job takes {_describe(job_kind.inputs)} only, not {_describe(extra)}.")
    inputs = job_kind.check(inputs)
    if queue == QUEUE_AUTO:
        queue = Job.Queue.GPU if _runs_models(kind, inputs.codec_config) and worker_gpu_online() else Job.Queue.CPU
    if kind == Job.Kind.COMPRESS and not repeat:
        same = artifact_find_same_config(pair=inputs.pair, codec_config=inputs.codec_config)
        if same is not None:
            raise ApplicationError(
                f"{same.label} was made with this codec config already: the job would repeat it (an identical "
                "result is recognised and not stored twice). Submit with 'repeat' to run it anyway.",
                extra={"artifact": same.pk})

    job = Job(
        team=team, created_by=user, kind=kind, queue=queue, pair=inputs.pair, artifact=inputs.artifact,
        model=inputs.model, dataset=inputs.dataset, gradient_set=inputs.gradient_set,
        codec_config=inputs.codec_config or {}, options=options,
        retry_of=retry_of, celery_task_id=str(uuid.uuid4()),
    )
    job.full_clean()
    job.save()
    transaction.on_commit(lambda: job_enqueue(job_id=job.pk))
    return job


def _runs_models(kind: str, codec_config: dict | None) -> bool:
    """Evaluating runs a model; so does compressing with a codec whose ``runs_models`` is set."""
    if kind == Job.Kind.EVALUATE:
        return True
    codec_id = (codec_config or {}).get("id")
    try:
        return bool(codec_id) and modelcodecs.get_codec_class(codec_id).runs_models
    except modelcodecs.ModelCodecError:
        return False


def job_enqueue(*, job_id: int) -> None:
    """Send the job's task to its queue (after submit, and again when the sweep finds its message gone). Sending
    twice is harmless: a worker claims the row only while it is queued."""
    job = Job.objects.select_related("team").get(pk=job_id)
    try:
        run_job_task.apply_async(args=[job.pk], queue=job.queue, task_id=job.celery_task_id or None)
    except Exception as exc:  # noqa: BLE001 - the broker is down: say so on the job instead of losing it
        logger.exception("could not queue job %s", job.pk)
        job_fail(job=job, error=f"Could not queue the job: {type(exc).__name__}: {exc}")
        return
    job_progress_publish(job=job)


def job_cancel(*, job: Job, user: AbstractBaseUser) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop (the worker notices within a second)."""
    team_require_write(user=user, team=job.team)
    if job.is_terminal:
        raise ApplicationError(f"The job has already {job.status}.")
    now = timezone.now()
    stopped = Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
        status=Job.Status.CANCELLED, cancel_requested=True, finished_at=now, stage="cancelled"
    )
    if not stopped:
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    if job_orphaned(job=job):  # no worker will ever notice the flag: finish it now
        return _job_finish_orphan(job=job, status=Job.Status.CANCELLED, error="")
    # No revoke: the task still reaches a worker, which skips the cancelled row (job_run) in no time.
    job_progress_publish(job=job)
    return job


def job_retry(*, job: Job, user: AbstractBaseUser) -> Job:
    """A new job with the same inputs as a failed or cancelled one."""
    if job.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
        raise ApplicationError("Only failed or cancelled jobs can be retried.")
    given = {name: getattr(job, name) for name in JOB_KINDS[job.kind].inputs}
    return job_submit(team=job.team, user=user, kind=job.kind, options=job.options, queue=job.queue,
                      retry_of=job, repeat=True, **given)


def job_fail(*, job: Job, error: str, log: str = "") -> Job:
    """Mark a job failed (unless it already finished), remove what its run left on disk, and publish. Used by
    the task's failure hooks, e.g. after the process running it was killed."""
    job.refresh_from_db()
    if job.is_terminal:
        return job
    _job_files_cleanup(job=job)
    job.status = Job.Status.FAILED
    job.error = redact_paths(error)[:4000]
    job.finished_at = timezone.now()
    if log:
        log = redact_paths(log)
        job.log_tail = log_tail(f"{job.log_tail}\n{log}" if job.log_tail else log)
    job.save(update_fields=["status", "error", "finished_at", "log_tail"])
    job_progress_publish(job=job)
    return job


def job_orphan_recover(*, job: Job) -> Job | None:
    """A running job whose worker is gone (``job_orphaned``): cancelled if a cancel was asked, requeued if
    ``DELTAVAULT_ORPHAN_REQUEUE`` is on and it was started once only, otherwise failed. Its partial files are
    removed. Returns None when another process changed the row first."""
    who = job.worker.name if job.worker_id and job.worker else "its worker"
    if job.cancel_requested:
        return _job_finish_orphan(job=job, status=Job.Status.CANCELLED, error="")
    if settings.DELTAVAULT_ORPHAN_REQUEUE and job.attempts < 2:
        return _job_finish_orphan(job=job, status=Job.Status.QUEUED, error="",
                                  note=f"{who} stopped while running the job: requeued once")
    return _job_finish_orphan(
        job=job, status=Job.Status.FAILED,
        error=f"The worker running this job ({who}) stopped (killed, out of memory or lost); retry the job.")


def _job_finish_orphan(*, job: Job, status: str, error: str, note: str = "") -> Job | None:
    now = timezone.now()
    fields = {"status": status, "error": error, "stage": status}
    if status == Job.Status.QUEUED:
        fields.update(progress=0.0, started_at=None, finished_at=None, worker=None)
    else:
        fields.update(finished_at=now)
    changed = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker_id=job.worker_id).update(**fields)
    job.refresh_from_db()
    if not changed:
        return None
    _job_files_cleanup(job=job)
    note = note or (f"cancelled: {job.worker or 'the worker'} is gone" if status == Job.Status.CANCELLED
                    else error)
    job.log_tail = log_tail(f"{job.log_tail}\n{note}" if job.log_tail else note)
    job.save(update_fields=["log_tail"])
    job_progress_publish(job=job)
    if status == Job.Status.QUEUED:
        job_enqueue(job_id=job.pk)
    return job


def _job_files_cleanup(*, job: Job) -> None:
    """Remove an unfinished run's files: its scratch folder and a half-restored output."""
    for path in (job_work_dir(job), job_restored_dir(job)):
        shutil.rmtree(path, ignore_errors=True)


# ---- delete, pin, expire ------------------------------------------------------------------------------------
@transaction.atomic
def job_delete(*, job: Job, user: AbstractBaseUser) -> dict:
    """Delete a finished job and (once committed) its restored copy. The artifact it made stays (delete it on its
    own); jobs that retried it keep their own rows."""
    team_require_admin(user=user, team=job.team, action="delete things")
    if not job.is_terminal:
        raise ApplicationError(f"Job #{job.pk} is {job.status}: cancel it first.")
    restored = job_restored_dir(job)
    files_remove_on_commit(dirs=[restored])
    job.delete()
    return {"jobs": 1}


def job_pin(*, job: Job, user: AbstractBaseUser, pinned: bool = True) -> Job:
    """Keep (or stop keeping) a decompress job's restored copy past ``DELTAVAULT_RESTORED_TTL_HOURS``."""
    team_require_write(user=user, team=job.team)
    if job.kind != Job.Kind.DECOMPRESS:
        raise ApplicationError("Only a decompress job has a restored copy to keep.")
    Job.objects.filter(pk=job.pk).update(pinned=pinned)
    job.refresh_from_db()
    job_progress_publish(job=job)
    return job


def restored_expire(*, now: datetime | None = None) -> list[int]:
    """Remove restored copies past their time (unpinned decompress jobs finished more than
    ``DELTAVAULT_RESTORED_TTL_HOURS`` ago) and folders of jobs that no longer exist. Returns the job ids whose
    copy went (the periodic ``housekeeping`` task calls this)."""
    now = now or timezone.now()
    root = Path(settings.DELTAVAULT_RESTORED_DIR)
    if not root.is_dir():
        return []
    ids = {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
    jobs = {job.pk: job for job in Job.objects.filter(pk__in=list(ids)).select_related("team")}
    removed = []
    for pk, path in sorted(ids.items()):
        job = jobs.get(pk)
        if job is not None and (not job.is_terminal or job.pinned):
            continue  # being written, or kept on purpose
        # A job that no longer exists, or one whose copy has no expiry (failed, cancelled), leaves an orphan.
        expires = job_restored_expires_at(job) if job is not None else None
        if expires is None or expires <= now:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(pk)
            if job is not None:
                reporter = JobReporter(job)
                reporter.log(f"restored copy {path} expired and was removed")
                Job.objects.filter(pk=pk).update(log_tail=job.log_tail)
                job_progress_publish(job=job)
    return removed


def work_dirs_sweep(*, min_age_s: float = 3600) -> list[str]:
    """Remove scratch folders (``job-<id>`` under ``DELTAVAULT_TMP_DIR``) of jobs that are finished or gone and
    untouched for ``min_age_s``: a runner removes its own on the way out, but a worker killed mid-job, or a job
    deleted or failed by the sweep before its worker noticed, leaves one behind. A running job's folder stays."""
    root = Path(settings.DELTAVAULT_TMP_DIR)
    if not root.is_dir():
        return []
    # Named as job_work_dir names them.
    folders = {int(p.name[4:]): p for p in root.glob("job-*") if p.is_dir() and p.name[4:].isdigit()}
    live = set(Job.objects.filter(pk__in=list(folders)).exclude(status__in=Job.TERMINAL)
               .values_list("pk", flat=True))
    cutoff = time.time() - min_age_s
    removed = []
    for pk, path in sorted(folders.items()):
        if pk in live or path.stat().st_mtime > cutoff:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


# ---- running -------------------------------------------------------------------------------------------------
def job_run(*, job: Job, worker_name: str = "", resume: bool = False) -> Job:
    """Do the job's work now, in this process (the Celery task calls this, with its worker's name). Returns the
    job in its final state.

    The row is claimed only while it is ``queued``, so a duplicate message never runs a job twice; ``resume``
    (a task retried after a database error) may also reclaim a row this same worker had claimed. A running job
    whose worker died is recovered by the sweep (``job_orphan_recover``), not by a redelivered message. Database
    errors propagate (the task retries them); every other error fails the job.
    """
    job.refresh_from_db()
    if job.is_terminal:
        return job
    now = timezone.now()
    claim = Q(status=Job.Status.QUEUED)
    if resume and worker_name:
        claim |= Q(status=Job.Status.RUNNING, worker__name=worker_name)
    worker = Worker.objects.filter(name=worker_name).first() if worker_name else None
    started = Job.objects.filter(claim, pk=job.pk).update(
        status=Job.Status.RUNNING, started_at=now, progress=0.0, stage="starting", error="", finished_at=None,
        metrics={}, worker=worker, attempts=F("attempts") + 1,
    )
    job.refresh_from_db()
    if not started:
        return job
    _job_files_cleanup(job=job)  # a re-run after a crash starts clean
    # Peak memory of this job, not of the worker process's lifetime (an earlier big job would count otherwise).
    measured_peak = reset_peak_rss()
    reporter = JobReporter(job)
    reporter.log(f"{job.kind} job #{job.pk} started on queue {job.queue}"
                 + (f" by worker {worker.name}" if worker is not None else ""))
    if job.queue == Job.Queue.GPU and worker is not None and not (worker.device or {}).get("gpu_name"):
        reporter.log(f"note: worker {worker.name} serves the gpu queue but has no GPU torch can use: "
                     "the job runs on its CPU")
    reporter.flush()
    if job.cancel_requested:
        return _job_finish_cancelled(job=job, reporter=reporter)

    try:
        metrics = JOB_KINDS[job.kind].run(job=job, reporter=reporter)
    except modelcodecs.CancelledError:
        return _job_finish_cancelled(job=job, reporter=reporter)
    except TRANSIENT_DB_ERRORS:
        raise
    except (modelcodecs.ModelCodecError, ApplicationError) as exc:
        message = redact_paths(exc.message if isinstance(exc, ApplicationError) else str(exc))
        reporter.log(f"failed: {message}")
        return _job_finish_failed(job=job, error=message)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug or an environment problem: record it
        # The traceback goes to the worker's log only: users see the error without server paths.
        logger.exception("job %s failed", job.pk)
        message = redact_paths(f"{type(exc).__name__}: {exc}")
        reporter.log(f"failed: {message} (details in the worker log)")
        return _job_finish_failed(job=job, error=message)

    metrics = dict(metrics)
    if measured_peak:
        metrics["peak_rss_bytes"] = peak_rss()
    else:
        metrics.pop("peak_rss_bytes", None)
        reporter.log("peak memory not measured: this system does not let a process reset its peak (VmHWM)")
    job.status = Job.Status.SUCCEEDED
    job.progress = 100.0
    job.stage = "done"
    job.metrics = metrics
    job.finished_at = timezone.now()
    reporter.log("succeeded")
    job.save(update_fields=["status", "progress", "stage", "metrics", "finished_at", "log_tail"])
    job_progress_publish(job=job)
    return job


def _job_finish_cancelled(*, job: Job, reporter: JobReporter) -> Job:
    _job_files_cleanup(job=job)
    reporter.log("cancelled")
    job.status = Job.Status.CANCELLED
    job.stage = "cancelled"
    job.finished_at = timezone.now()
    # metrics: what the run recorded before it stopped (e.g. a training curve)
    job.save(update_fields=["status", "stage", "finished_at", "log_tail", "metrics"])
    job_progress_publish(job=job)
    return job


def _job_finish_failed(*, job: Job, error: str) -> Job:
    _job_files_cleanup(job=job)
    job.status = Job.Status.FAILED
    job.error = error[:4000]
    job.stage = "failed"
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "stage", "finished_at", "log_tail", "metrics"])
    job_progress_publish(job=job)
    return job
