"""Every worker's main process runs one background thread that

- writes the worker's heartbeat every ``DELTAVAULT_WORKER_HEARTBEAT`` seconds (name, queues, device, the jobs it
  holds), through ``webapp.jobs.worker_services.worker_heartbeat``;
- at start and every ``DELTAVAULT_SWEEP_INTERVAL`` seconds runs the sweep (``jobs_sweep``: running jobs whose
  worker is gone) and the reconciliation (``jobs_reconcile``: queued jobs whose broker message is gone).

So the sweeper runs wherever a worker runs (``scripts/run``, docker-compose, the end-to-end stack) with no extra
process. The thread starts after the pool has forked (``worker_ready``) and never touches CUDA: the GPU is probed
in a short-lived subprocess, so forked pool processes can still initialise it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

from celery.signals import worker_ready, worker_shutdown
from celery.worker import state as worker_state

logger = logging.getLogger(__name__)

RUN_JOB = "workers.tasks.run_job"
_GPU_PROBE = (
    "import json, torch\n"
    "if torch.cuda.is_available():\n"
    "    p = torch.cuda.get_device_properties(0)\n"
    "    print(json.dumps({'gpu_name': p.name, 'gpu_memory_bytes': p.total_memory,"
    " 'gpu_count': torch.cuda.device_count()}))\n"
    "else:\n"
    "    print('{}')\n"
)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def probe_gpu(timeout: float = 120) -> dict:
    """GPU name and memory as torch sees them, from a subprocess; {} without torch or a GPU."""
    try:
        out = subprocess.run([sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=timeout)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}


def held_job_ids() -> list[int]:
    """Ids of the jobs this worker holds: running, reserved, or waiting in its timer for a retry."""
    for _ in range(5):  # the consumer thread changes these sets while we copy them
        try:
            requests = [*worker_state.active_requests, *worker_state.reserved_requests,
                        *worker_state.scheduled_requests]
            break
        except RuntimeError:
            continue
    else:
        raise RuntimeError("could not read the worker's requests")
    ids = []
    for request in requests:
        if request.task_name != RUN_JOB:
            continue
        args = request.args or [(request.kwargs or {}).get("job_id")]
        if args and isinstance(args[0], int):
            ids.append(args[0])
    return ids


class Heartbeat(threading.Thread):
    def __init__(self, consumer):
        super().__init__(name="deltavault-heartbeat", daemon=True)
        self.consumer = consumer
        self.name_ = consumer.hostname
        queues = getattr(consumer.app.amqp.queues, "consume_from", None) or consumer.app.amqp.queues
        self.queues = sorted(queues)
        self.device = {"cpu_cores": cpu_cores()}
        self.stopping = threading.Event()
        self.beat_at = None  # when the last recorded heartbeat was taken

    def beat(self) -> None:
        from django.utils import timezone

        from webapp.jobs.worker_services import worker_heartbeat

        at = timezone.now()  # before the snapshot: a claim after it is judged by the next heartbeat
        held = held_job_ids()
        worker_heartbeat(name=self.name_, hostname=socket.gethostname(), pid=os.getpid(), queues=self.queues,
                         device=self.device, held_jobs=held, at=at)
        self.beat_at = at

    def sweep(self) -> None:
        from webapp.jobs.models import Job
        from webapp.jobs.worker_services import jobs_reconcile, jobs_sweep
        from workers.broker import broker_pending_task_ids

        # Judged as of this worker's last heartbeat, so a slow database write never makes it find itself gone.
        jobs_sweep(now=self.beat_at)
        pending = broker_pending_task_ids(self.consumer.app, queues=list(Job.Queue.values))
        if pending is not None:
            jobs_reconcile(pending_task_ids=pending, now=self.beat_at)

    def _probe(self) -> None:
        self.device = {**self.device, **probe_gpu()}  # a new dict: a heartbeat may be reading the old one

    def _guarded(self, step) -> None:
        from django.db import close_old_connections

        try:
            step()
        except Exception:  # noqa: BLE001 - the thread must outlive a database or broker outage
            logger.exception("worker %s: %s failed", self.name_, step.__name__)
        finally:
            close_old_connections()

    def run(self) -> None:
        from django.conf import settings

        # The GPU probe imports torch (seconds): beside the heartbeats, never in their way.
        threading.Thread(target=self._probe, name="deltavault-gpu-probe", daemon=True).start()
        self._guarded(self.beat)
        self._guarded(self.sweep)  # at worker start: recover what a previous crash or broker restart left
        next_sweep = time.monotonic() + settings.DELTAVAULT_SWEEP_INTERVAL
        while not self.stopping.wait(settings.DELTAVAULT_WORKER_HEARTBEAT):
            self._guarded(self.beat)
            if time.monotonic() >= next_sweep:
                self._guarded(self.sweep)
                next_sweep = time.monotonic() + settings.DELTAVAULT_SWEEP_INTERVAL

    def stop(self) -> None:
        from webapp.jobs.worker_services import worker_stopped

        self.stopping.set()
        if self.is_alive():
            self.join(timeout=5)
        self._guarded(lambda: worker_stopped(name=self.name_))


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def start_heartbeat(sender=None, **_):
    global _heartbeat
    if _heartbeat is None and sender is not None:
        _heartbeat = Heartbeat(sender)
        _heartbeat.start()


@worker_shutdown.connect
def stop_heartbeat(sender=None, **_):
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
