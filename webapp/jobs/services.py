"""Job services: submit, run (the whole work of a job, called by the Celery task), cancel, retry, fail, publish.

``job_run`` never holds one transaction for the whole job: progress, status and the cancel flag must be visible
to other processes while it works. Writes use ``update_fields`` (or queryset updates) so a concurrent
``job_cancel`` (which sets ``cancel_requested``) is never overwritten.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import modelcodecs
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.selectors import job_state
from webapp.registry.models import Artifact, Dataset, ModelEntry, Pair
from webapp.teams.models import Team
from webapp.teams.services import team_require_write
from workers.tasks import run_job as run_job_task

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
LOG_TAIL_CHARS = 16_000


# ---- publishing ----------------------------------------------------------------------------------------------
def job_progress_publish(*, job: Job) -> None:
    """Send the job's current state to the groups ``job-<id>`` and ``team-<slug>`` (websocket consumers forward
    it). Publishing is best effort: a channel layer that is down never fails the job."""
    channel_layer = get_channel_layer()
    if channel_layer is None:
        return
    event = {"type": "job.update", "job": job_state(job)}
    try:
        async_to_sync(channel_layer.group_send)(f"job-{job.pk}", event)
        async_to_sync(channel_layer.group_send)(f"team-{job.team.slug}", event)
    except Exception:  # noqa: BLE001 - the job must go on even when Redis is unreachable
        logger.warning("could not publish job %s", job.pk, exc_info=True)


# ---- submit / cancel / retry / fail --------------------------------------------------------------------------
def _codec_config_normalise(codec_config: dict | str | None) -> tuple[dict, type]:
    if not codec_config:
        raise ApplicationError("A compress job needs a codec config, e.g. {\"id\": \"zstd\"}.")
    try:
        codec = modelcodecs.get_codec(codec_config)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Invalid codec config: {exc}", extra={"codec_config": codec_config}) from exc
    return codec.get_config(), type(codec)


def _check_team(team: Team, **objects) -> None:
    for label, obj in objects.items():
        if obj is not None and obj.team_id != team.pk:
            raise ApplicationError(f"The {label} belongs to another team.")


def _options_clean(options: dict | None) -> dict:
    options = dict(options or {})
    threads = options.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ApplicationError("options.threads must be a positive integer.")
    unknown = sorted(set(options) - {"threads", "max_tokens"})
    if unknown:
        raise ApplicationError(f"Unknown job option(s): {', '.join(unknown)}.")
    return options


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
    codec_config: dict | str | None = None,
    options: dict | None = None,
    queue: str = Job.Queue.CPU,
    retry_of: Job | None = None,
) -> Job:
    """Validate, create the queued Job row and queue ``run_job`` on ``queue`` once the transaction commits."""
    team_require_write(user=user, team=team)
    _check_team(team, pair=pair, artifact=artifact, model=model, dataset=dataset)
    if queue not in Job.Queue.values:
        raise ApplicationError(f"Unknown queue {queue!r}; one of {', '.join(Job.Queue.values)}.")
    options = _options_clean(options)
    config: dict = {}

    if kind == Job.Kind.COMPRESS:
        if pair is None:
            raise ApplicationError("A compress job needs a pair (base + fine-tuned model).")
        if artifact is not None or model is not None or dataset is not None:
            raise ApplicationError("A compress job takes a pair and a codec config only.")
        config, codec_cls = _codec_config_normalise(codec_config)
        if getattr(codec_cls, "input_kind", "weights") != "weights":
            raise ApplicationError(f"The codec {codec_cls.codec_id!r} compresses {codec_cls.input_kind}, "
                                   "not model checkpoints.")
    elif kind == Job.Kind.DECOMPRESS:
        if artifact is None:
            raise ApplicationError("A decompress job needs an artifact.")
        if pair is not None or model is not None or dataset is not None or codec_config:
            raise ApplicationError("A decompress job takes an artifact only.")
        pair = artifact.pair
        config = dict(artifact.codec_config or {"id": artifact.codec_id})
    elif kind == Job.Kind.EVALUATE:
        if dataset is None:
            raise ApplicationError("An evaluate job needs a dataset.")
        if (model is None) == (artifact is None):
            raise ApplicationError("An evaluate job needs exactly one of a model or an artifact.")
        if pair is not None or codec_config:
            raise ApplicationError("An evaluate job takes a model or an artifact, and a dataset.")
        if artifact is not None:
            pair = artifact.pair
            config = dict(artifact.codec_config or {"id": artifact.codec_id})
    else:
        raise ApplicationError(f"Unknown job kind {kind!r}; one of {', '.join(Job.Kind.values)}.")

    job = Job(
        team=team, created_by=user, kind=kind, queue=queue, pair=pair, artifact=artifact, model=model,
        dataset=dataset, codec_config=config, options=options, retry_of=retry_of,
        celery_task_id=str(uuid.uuid4()),
    )
    job.full_clean()
    job.save()
    transaction.on_commit(lambda: _job_enqueue(job_id=job.pk))
    return job


def _job_enqueue(*, job_id: int) -> None:
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
    # No revoke: the task still reaches a worker, which skips the cancelled row (job_run) in no time.
    job_progress_publish(job=job)
    return job


def job_retry(*, job: Job, user: AbstractBaseUser) -> Job:
    """A new job with the same inputs as a failed or cancelled one."""
    if job.status not in (Job.Status.FAILED, Job.Status.CANCELLED):
        raise ApplicationError("Only failed or cancelled jobs can be retried.")
    return job_submit(
        team=job.team, user=user, kind=job.kind,
        pair=job.pair if job.kind == Job.Kind.COMPRESS else None,
        artifact=job.artifact, model=job.model, dataset=job.dataset,
        codec_config=job.codec_config if job.kind == Job.Kind.COMPRESS else None,
        options=job.options, queue=job.queue, retry_of=job,
    )


def job_fail(*, job: Job, error: str, log: str = "") -> Job:
    """Mark a job failed (unless it already finished), remove what its run left on disk, and publish. Used by
    the task's failure hooks, e.g. after the process running it was killed."""
    job.refresh_from_db()
    if job.is_terminal:
        return job
    _job_files_cleanup(job=job)
    job.status = Job.Status.FAILED
    job.error = error[:4000]
    job.finished_at = timezone.now()
    if log:
        job.log_tail = _tail(f"{job.log_tail}\n{log}" if job.log_tail else log)
    job.save(update_fields=["status", "error", "finished_at", "log_tail"])
    job_progress_publish(job=job)
    return job


def _job_files_cleanup(*, job: Job) -> None:
    """Remove a dead run's temporaries: the hidden compress folder, a half-restored output, an eval copy."""
    leftovers = [Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk),
                 Path(settings.DELTAVAULT_TMP_DIR) / f"eval-job-{job.pk}",
                 _compress_work_dir(job)]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def _tail(text: str) -> str:
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines)[-LOG_TAIL_CHARS:]


# ---- running -------------------------------------------------------------------------------------------------
class JobReporter:
    """The progress callback and cancel check handed to modelcodecs for one job.

    ``__call__(done, total, stage)`` updates the row at most every ``DELTAVAULT_PROGRESS_INTERVAL`` seconds (and
    always at 100 % and on a new stage) and publishes. ``cancelled()`` reads ``cancel_requested`` from the row at
    most every ``DELTAVAULT_CANCEL_CHECK_INTERVAL`` seconds.
    """

    def __init__(self, job: Job, *, span: tuple[float, float] = (0.0, 100.0)):
        self.job = job
        self.interval = float(settings.DELTAVAULT_PROGRESS_INTERVAL)
        self.cancel_interval = float(settings.DELTAVAULT_CANCEL_CHECK_INTERVAL)
        self.span = span
        self._last_write: float | None = None
        self._last_cancel_check: float | None = None
        self._cancel_seen = False
        self._lines: list[str] = job.log_tail.splitlines()[-LOG_TAIL_LINES:] if job.log_tail else []
        self._stage = job.stage
        # modelcodecs may report from its worker threads: one report at a time.
        self._lock = threading.RLock()

    # progress ------------------------------------------------------------------------------------------------
    def __call__(self, done: int, total: int, stage: str = "") -> None:
        with self._lock:
            lo, hi = self.span
            fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
            # Never move backwards (a codec may report a stage with done=0 after the bytes were coded).
            progress = max(lo + (hi - lo) * fraction, float(self.job.progress))
            if stage and stage != self._stage:
                self._stage = stage
                self.log(stage)
            now = time.monotonic()
            if fraction < 1.0 and self._last_write is not None and now - self._last_write < self.interval:
                return
            self._last_write = now
            self.job.progress = min(round(progress, 3), 100.0)
            if stage:
                self.job.stage = stage[:200]
            self.flush()

    def set_span(self, lo: float, hi: float) -> None:
        self.span = (lo, hi)

    def stage(self, stage: str) -> None:
        """Enter a new stage without changing the progress figure."""
        self._stage = stage
        self.job.stage = stage[:200]
        self.log(stage)
        self._last_write = time.monotonic()
        self.flush()

    def log(self, message: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self._lines.append(f"[{stamp}] {line}")
        self._lines = self._lines[-LOG_TAIL_LINES:]
        self.job.log_tail = _tail("\n".join(self._lines))

    def flush(self) -> None:
        Job.objects.filter(pk=self.job.pk).update(
            progress=self.job.progress, stage=self.job.stage, log_tail=self.job.log_tail
        )
        job_progress_publish(job=self.job)

    # cancel --------------------------------------------------------------------------------------------------
    def cancelled(self) -> bool:
        if self._cancel_seen:
            return True
        with self._lock:
            now = time.monotonic()
            if self._last_cancel_check is not None and now - self._last_cancel_check < self.cancel_interval:
                return False
            self._last_cancel_check = now
            self._cancel_seen = bool(
                Job.objects.filter(pk=self.job.pk).values_list("cancel_requested", flat=True).first()
            )
            return self._cancel_seen


def _threads(job: Job) -> int | None:
    return (job.options or {}).get("threads") or settings.DELTAVAULT_JOB_THREADS


def job_run(*, job: Job) -> Job:
    """Do the job's work now, in this process (the Celery task calls this). Returns the job in its final state.

    A job that already finished is left alone; a job found ``running`` (its worker died and the broker handed the
    task on) is run again from the start.
    """
    job.refresh_from_db()
    if job.is_terminal:
        return job
    now = timezone.now()
    started = Job.objects.filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).update(
        status=Job.Status.RUNNING, started_at=now, progress=0.0, stage="starting", error="", finished_at=None,
        metrics={},
    )
    job.refresh_from_db()
    if not started:
        return job
    reporter = JobReporter(job)
    reporter.log(f"{job.kind} job #{job.pk} started on queue {job.queue}")
    reporter.flush()
    if job.cancel_requested:
        return _job_finish_cancelled(job=job, reporter=reporter)

    runner = {Job.Kind.COMPRESS: _run_compress, Job.Kind.DECOMPRESS: _run_decompress,
              Job.Kind.EVALUATE: _run_evaluate}[job.kind]
    try:
        metrics = runner(job=job, reporter=reporter)
    except modelcodecs.CancelledError:
        return _job_finish_cancelled(job=job, reporter=reporter)
    except (modelcodecs.ModelCodecError, ApplicationError) as exc:
        message = exc.message if isinstance(exc, ApplicationError) else str(exc)
        reporter.log(f"failed: {message}")
        return _job_finish_failed(job=job, error=message)
    except Exception as exc:  # noqa: BLE001 - anything else is a bug or an environment problem: record it
        logger.exception("job %s failed", job.pk)
        reporter.log(traceback.format_exc())
        return _job_finish_failed(job=job, error=f"{type(exc).__name__}: {exc}")

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
    reporter.log("cancelled")
    job.status = Job.Status.CANCELLED
    job.stage = "cancelled"
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "stage", "finished_at", "log_tail"])
    job_progress_publish(job=job)
    return job


def _job_finish_failed(*, job: Job, error: str) -> Job:
    job.status = Job.Status.FAILED
    job.error = error[:4000]
    job.stage = "failed"
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "stage", "finished_at", "log_tail"])
    job_progress_publish(job=job)
    return job


# ---- kinds ---------------------------------------------------------------------------------------------------
def _artifact_storage():
    return storages["artifacts"]


@contextmanager
def _artifact_local_file(artifact: Artifact) -> Iterator[Path]:
    """A local path to the artifact: the file itself on a local storage, else a temporary download (S3 and other
    remote storages are a settings change: the codecs need a seekable local file)."""
    storage = _artifact_storage()
    if not storage.exists(artifact.storage_name):
        raise ApplicationError(f"The artifact file {artifact.storage_name!r} is missing from storage.")
    try:
        local_path = Path(storage.path(artifact.storage_name))
    except NotImplementedError:
        local_path = None
    if local_path is not None:
        yield local_path
        return
    tmp_dir = Path(settings.DELTAVAULT_TMP_DIR)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    local = tmp_dir / f"download-{uuid.uuid4().hex}.dvz"
    try:
        with storage.open(artifact.storage_name, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        yield local
    finally:
        local.unlink(missing_ok=True)


def _artifact_store(*, local: Path, name: str) -> str:
    """Move a finished artifact file into the artifacts storage; return its storage name. A local storage gets a
    rename; any other storage an upload."""
    storage = _artifact_storage()
    try:
        final_path = Path(storage.path(name))
    except NotImplementedError:
        with open(local, "rb") as fh:
            return storage.save(name, File(fh, name=os.path.basename(name)))
    final_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, final_path)
    return name


def _compress_work_dir(job: Job) -> Path:
    return Path(settings.DELTAVAULT_TMP_DIR) / f"compress-job-{job.pk}"


def _codec_needs_base(codec_id: str) -> bool:
    try:
        return bool(modelcodecs.get_codec_class(codec_id).needs_base)
    except modelcodecs.ModelCodecError:
        return False


def _run_compress(*, job: Job, reporter: JobReporter) -> dict:
    pair = job.pair
    if pair is None:
        raise ApplicationError("The job's pair was deleted.")
    codec = modelcodecs.get_codec(job.codec_config)
    final_name = f"{job.team.slug}/job-{job.pk}-{codec.codec_id}.dvz"
    # Everything in flight lives in a per-job folder outside the storage; it is removed on any failure (and at the
    # start of a re-run after a crash), so a killed worker leaves no visible file and no row.
    work_dir = _compress_work_dir(job)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    tmp_path = work_dir / "artifact.dvz"
    base_dir = pair.base.path if codec.needs_base else None
    reporter.log(f"compressing {pair.finetuned.name} with {codec.codec_id}"
                 + (f" against {pair.base.name}" if base_dir else ""))
    try:
        summary = modelcodecs.compress_model(
            pair.finetuned.path, tmp_path, codec=codec, base_dir=base_dir, threads=_threads(job),
            progress=reporter, cancel=reporter.cancelled,
        ).as_dict()
        reporter.stage("storing artifact")
        compressed_bytes = tmp_path.stat().st_size
        with transaction.atomic():
            artifact = Artifact(
                team=job.team, pair=pair, job=job, codec_id=codec.codec_id, codec_config=codec.get_config(),
                storage_name=final_name,
                original_bytes=int(summary.get("original_bytes") or 0),
                compressed_bytes=int(summary.get("compressed_bytes") or compressed_bytes),
                ratio=float(summary.get("ratio") or 0.0),
                metrics={k: summary.get(k) for k in ("mb_per_s", "seconds", "peak_rss_bytes", "tensors", "files")
                         if k in summary},
            )
            artifact.full_clean()
            artifact.storage_name = _artifact_store(local=tmp_path, name=final_name)
            artifact.save()
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    reporter.log(f"artifact #{artifact.pk}: {artifact.original_bytes} -> {artifact.compressed_bytes} bytes "
                 f"(ratio {artifact.ratio:.3f})")
    return {**_jsonable(summary), "artifact_id": artifact.pk}


def _jsonable(summary: dict) -> dict:
    out = {}
    for key, value in summary.items():
        if isinstance(value, (str, int, float, bool, type(None), list, dict)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _restore(*, job: Job, artifact: Artifact, out_dir: Path, reporter: JobReporter) -> dict:
    """Decompress ``artifact`` into ``out_dir`` (which must not exist yet)."""
    base_dir = None
    if _codec_needs_base(artifact.codec_id):
        if artifact.pair is None:
            raise ApplicationError("The artifact needs its base model, but its pair was deleted.")
        base_dir = artifact.pair.base.path
    with _artifact_local_file(artifact) as path:
        return modelcodecs.decompress_model(
            path, out_dir, base_dir=base_dir, threads=_threads(job), progress=reporter, cancel=reporter.cancelled
        ).as_dict()


def _run_decompress(*, job: Job, reporter: JobReporter) -> dict:
    artifact = job.artifact
    if artifact is None:
        raise ApplicationError("The job's artifact was deleted.")
    out_dir = Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    reporter.log(f"restoring artifact #{artifact.pk} ({artifact.codec_id}) into {out_dir}")
    try:
        summary = _jsonable(_restore(job=job, artifact=artifact, out_dir=out_dir, reporter=reporter))
        reporter.stage("verifying")
        verification = _verify_restored(artifact=artifact, out_dir=out_dir)
        if verification["status"] in (Artifact.Verification.VERIFIED, Artifact.Verification.FAILED):
            artifact.verification = verification["status"]
            artifact.verified_at = timezone.now()
            artifact.save(update_fields=["verification", "verified_at"])
        if verification["status"] == Artifact.Verification.FAILED:
            raise ApplicationError(
                f"Restored files differ from the fine-tuned model: {', '.join(verification['mismatched'][:10])}"
            )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    summary["output_dir"] = str(out_dir)
    summary["verification"] = verification
    reporter.log(f"verification: {verification['status']} ({verification['checked']} files)")
    return summary


def _verify_restored(*, artifact: Artifact, out_dir: Path) -> dict:
    """Compare every restored file's sha256 with the fine-tuned model's recorded hashes."""
    lossless = True
    try:
        lossless = bool(modelcodecs.get_codec_class(artifact.codec_id).lossless)
    except modelcodecs.ModelCodecError:
        pass
    if not lossless:
        return {"status": "skipped", "reason": "lossy codec: values are approximate", "checked": 0,
                "mismatched": []}
    if artifact.pair is None:
        return {"status": "skipped", "reason": "no fine-tuned model recorded", "checked": 0, "mismatched": []}
    recorded = {f["name"]: f.get("sha256") for f in artifact.pair.finetuned.files or [] if f.get("name")}
    if not recorded:
        return {"status": "skipped", "reason": "no file hashes recorded", "checked": 0, "mismatched": []}
    mismatched = []
    for name, sha in sorted(recorded.items()):
        restored = out_dir / name
        if not restored.is_file() or (sha and _sha256(restored) != sha):
            mismatched.append(name)
    status = Artifact.Verification.FAILED if mismatched else Artifact.Verification.VERIFIED
    return {"status": str(status), "checked": len(recorded), "mismatched": mismatched}


def _run_evaluate(*, job: Job, reporter: JobReporter) -> dict:
    from modelcodecs import synthetic  # imports torch lazily, only here

    dataset = job.dataset
    if dataset is None:
        raise ApplicationError("The job's dataset was deleted.")
    if not Path(dataset.path).is_file():
        raise ApplicationError(f"The dataset file {dataset.path} is missing.")
    tmp_dir = None
    try:
        if job.artifact is not None:
            tmp_root = Path(settings.DELTAVAULT_TMP_DIR)
            tmp_root.mkdir(parents=True, exist_ok=True)
            tmp_dir = tmp_root / f"eval-job-{job.pk}"
            shutil.rmtree(tmp_dir, ignore_errors=True)
            reporter.set_span(0.0, 50.0)
            reporter.log(f"restoring artifact #{job.artifact.pk} for evaluation")
            _restore(job=job, artifact=job.artifact, out_dir=tmp_dir, reporter=reporter)
            model_dir = tmp_dir
            reporter.set_span(50.0, 100.0)
        elif job.model is not None:
            model_dir = Path(job.model.path)
        else:
            raise ApplicationError("The job's model or artifact was deleted.")
        reporter.stage("evaluating perplexity")
        kwargs = {}
        params = inspect.signature(synthetic.evaluate_perplexity).parameters
        if "progress" in params:
            kwargs["progress"] = reporter
        if "cancel" in params:
            kwargs["cancel"] = reporter.cancelled
        if "max_tokens" in params and (job.options or {}).get("max_tokens"):
            kwargs["max_tokens"] = job.options["max_tokens"]
        started = time.perf_counter()
        result = synthetic.evaluate_perplexity(str(model_dir), str(dataset.path), **kwargs)
        seconds = time.perf_counter() - started
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    metrics = _jsonable(result) if isinstance(result, dict) else {"perplexity": float(result)}
    perplexity = float(metrics["perplexity"])
    metrics["perplexity"] = perplexity
    metrics.setdefault("seconds", round(seconds, 3))
    if job.artifact is not None:
        Artifact.objects.filter(pk=job.artifact.pk).update(perplexity=perplexity)
    reporter.log(f"perplexity {perplexity:.4f}")
    return metrics
