"""What a running job tells the world: progress, stage and log tail written to its row (throttled) and published
to the Channels groups ``job-<id>`` and ``team-<slug>``, and the cancel flag read back from the row."""

from __future__ import annotations

import logging
import threading
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from webapp.jobs.models import Job
from webapp.jobs.selectors import job_state

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
LOG_TAIL_CHARS = 16_000


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


def log_tail(text: str) -> str:
    """The last lines of a log, as kept on the Job row."""
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines)[-LOG_TAIL_CHARS:]


class JobReporter:
    """The progress callback and cancel check handed to modelcodecs for one job.

    ``__call__(done, total, stage)`` updates the row at most every ``DELTAVAULT_PROGRESS_INTERVAL`` seconds (and
    always at 100 % and on a new stage) and publishes, with live metrics while the job runs: ``elapsed_s``, the
    throughput of the current step (``mb_per_s`` when ``unit`` is bytes, else ``<unit>_per_s``) and ``eta_s``
    (from the progress so far). The run's own metrics replace them when it succeeds. ``cancelled()`` reads
    ``cancel_requested`` from the row at most every ``DELTAVAULT_CANCEL_CHECK_INTERVAL`` seconds.
    """

    def __init__(self, job: Job, *, span: tuple[float, float] = (0.0, 100.0)):
        self.job = job
        self.interval = float(settings.DELTAVAULT_PROGRESS_INTERVAL)
        self.cancel_interval = float(settings.DELTAVAULT_CANCEL_CHECK_INTERVAL)
        self.span = span
        self._last_write: float | None = None
        self._last_cancel_check: float | None = None
        self._last_metrics_write: float | None = None
        self._last_partial: float | None = None
        self._partial_seen: set[str] = set()
        self._partial: dict[str, dict] = {}
        self._cancel_seen = False
        self._lines: list[str] = job.log_tail.splitlines()[-LOG_TAIL_LINES:] if job.log_tail else []
        self._stage = job.stage
        self.unit = "bytes"  # what ``done`` and ``total`` count; a runner sets e.g. "tokens"
        self.clock = time.monotonic  # of the progress writes and live metrics
        self._started = self.clock()
        self._rate_start: tuple[int, float, int] | None = None  # (total, time, done) when the current step began
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
            now = self.clock()
            if fraction < 1.0 and self._last_write is not None and now - self._last_write < self.interval:
                return
            self._last_write = now
            self.job.progress = min(round(progress, 3), 100.0)
            if stage:
                self.job.stage = stage[:200]
            live = {**self.training_metrics(), **self._live_metrics(done, total, now)}
            if self._partial:  # an evaluation's running scores stay beside the live figures
                live["partial"] = dict(self._partial)
            self.job.metrics = live
            self.flush()

    def _live_metrics(self, done: int, total: int, now: float) -> dict:
        if self._rate_start is None or self._rate_start[0] != total or done < self._rate_start[2]:
            self._rate_start = (total, now, 0)
        elapsed = now - self._started
        live = {"elapsed_s": round(elapsed, 1)}
        _, since, done_before = self._rate_start
        if now > since and done > done_before:
            rate = (done - done_before) / (now - since)
            if self.unit == "bytes":
                live["mb_per_s"] = round(rate / 1e6, 2)
            else:
                live[f"{self.unit}_per_s"] = round(rate, 1)
        progress = float(self.job.progress)
        if 0.0 < progress < 100.0 and elapsed > 0:
            live["eta_s"] = round(elapsed * (100.0 - progress) / progress, 1)
        return live

    def set_span(self, lo: float, hi: float) -> None:
        self.span = (lo, hi)

    def stage(self, stage: str) -> None:
        """Enter a new stage without changing the progress figure."""
        self._stage = stage
        self.job.stage = stage[:200]
        self.log(stage)
        self._last_write = self.clock()
        self.flush()

    def log(self, message: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        for line in str(message).splitlines() or [""]:
            self._lines.append(f"[{stamp}] {line}")
        self._lines = self._lines[-LOG_TAIL_LINES:]
        self.job.log_tail = log_tail("\n".join(self._lines))

    def flush(self) -> None:
        Job.objects.filter(pk=self.job.pk).update(
            progress=self.job.progress, stage=self.job.stage, log_tail=self.job.log_tail, metrics=self.job.metrics
        )
        job_progress_publish(job=self.job)

    # training curves ------------------------------------------------------------------------------------------
    def training_step(self, point: dict) -> None:
        """Record one training step (``{"step", "loss", ...}``, e.g. BitDelta's distillation): the loss series
        lives in the row's metrics (``training_loss``: [[step, loss], ...]) so the REST job and every websocket
        message carry the curve so far. Written with the progress throttle; the last step is always written."""
        with self._lock:
            metrics = self.job.metrics if isinstance(self.job.metrics, dict) else {}
            series = metrics.setdefault("training_loss", [])
            series.append([int(point["step"]), float(point["loss"])])
            metrics["training_step"] = int(point["step"])
            if "steps" in point:
                metrics["training_steps"] = int(point["steps"])
            self.job.metrics = metrics
            now = time.monotonic()
            last = point.get("step") == point.get("steps")
            if not last and self._last_metrics_write is not None and now - self._last_metrics_write < self.interval:
                return
            self._last_metrics_write = now
            Job.objects.filter(pk=self.job.pk).update(metrics=metrics)
            job_progress_publish(job=self.job)

    def training_metrics(self) -> dict:
        """The training curve recorded so far, to keep in the job's final metrics."""
        metrics = self.job.metrics if isinstance(self.job.metrics, dict) else {}
        return {k: metrics[k] for k in ("training_loss", "training_step", "training_steps") if k in metrics}

    def partial(self, which: str, scores: dict) -> None:
        """Running scores of an evaluation (``which``: "original" or "restored"), kept on the row under
        ``metrics["partial"]`` and published: the first of each model at once, then at most every progress
        interval."""
        with self._lock:
            self._partial[which] = scores
            metrics = {**(self.job.metrics or {}), "partial": dict(self._partial)}
            self.job.metrics = metrics
            now = time.monotonic()
            first = which not in self._partial_seen  # the first scores of each model always go out
            self._partial_seen.add(which)
            if not first and self._last_partial is not None and now - self._last_partial < self.interval:
                return
            self._last_partial = now
            Job.objects.filter(pk=self.job.pk).update(metrics=metrics)
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
