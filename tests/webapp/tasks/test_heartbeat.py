"""The worker-side thread (workers/heartbeat.py) and the broker reader (workers/broker.py), without a broker."""

import json
from types import SimpleNamespace
from unittest import mock

import pytest
from celery.worker import state as worker_state

from tests.factories import job_create
from webapp.jobs.models import Job, Worker
from workers.broker import _task_id
from workers.heartbeat import Heartbeat, held_job_ids

pytestmark = pytest.mark.django_db


class _Request:
    def __init__(self, task_name, args):
        self.task_name, self.args, self.kwargs = task_name, args, {}


def _consumer(name="cpu@test"):
    return SimpleNamespace(hostname=name, app=SimpleNamespace(
        amqp=SimpleNamespace(queues=SimpleNamespace(consume_from={"cpu": None, "gpu": None}))))


def test_held_jobs_are_the_run_job_requests_running_reserved_or_waiting_for_a_retry():
    requests = [_Request("workers.tasks.run_job", [5]), _Request("workers.tasks.run_job", [6]),
                _Request("workers.tasks.run_job", [7]), _Request("other.task", [8])]
    worker_state.active_requests.add(requests[0])
    worker_state.reserved_requests.add(requests[1])
    worker_state.scheduled_requests.add(requests[2])
    worker_state.active_requests.add(requests[3])
    try:
        assert sorted(held_job_ids()) == [5, 6, 7]
    finally:
        for request in requests:
            for pool in (worker_state.active_requests, worker_state.reserved_requests, worker_state.scheduled_requests):
                pool.discard(request)


def test_beat_records_the_worker_and_sweep_recovers_and_reconciles(world, settings):
    settings.DELTAVAULT_RECONCILE_GRACE = 0
    lost = job_create(team=world["acme"], celery_task_id="lost-message")
    heartbeat = Heartbeat(_consumer())
    heartbeat.beat()
    worker = Worker.objects.get(name="cpu@test")
    assert worker.queues == ["cpu", "gpu"] and worker.device["cpu_cores"] >= 1 and worker.held_jobs == []

    with mock.patch("workers.broker.broker_pending_task_ids", return_value=set()) as pending, \
            mock.patch("webapp.jobs.services.run_job_task") as task:
        heartbeat.sweep()
    assert pending.call_args.kwargs == {"queues": ["cpu", "gpu"]}
    assert task.apply_async.call_args.kwargs["task_id"] == "lost-message"
    lost.refresh_from_db()
    assert lost.status == Job.Status.QUEUED


def test_stop_removes_the_worker(world):
    heartbeat = Heartbeat(_consumer("cpu@bye"))
    heartbeat.beat()
    with mock.patch("django.db.close_old_connections"):   # the thread's own connection; not the test's
        heartbeat.stop()
    assert not Worker.objects.filter(name="cpu@bye").exists()


def test_task_ids_are_read_from_queued_and_unacknowledged_messages():
    message = {"body": "W10=", "headers": {"id": "abc", "task": "workers.tasks.run_job"}, "properties": {}}
    assert _task_id(json.dumps(message)) == "abc"
    assert _task_id(json.dumps([message, "", "cpu"])) == "abc"     # the unacked hash keeps [message, exchange, key]
    assert _task_id(b"not json") is None and _task_id(json.dumps({"headers": None})) is None


def test_a_slow_heartbeat_write_never_makes_the_worker_fail_its_own_job(world, settings):
    """The sweep judges as of the worker's own last heartbeat: a database write slower than the timeout (a loaded
    server) must not make the worker find itself gone."""
    from datetime import timedelta

    from django.utils import timezone

    settings.DELTAVAULT_WORKER_TIMEOUT = 3
    heartbeat = Heartbeat(_consumer("cpu@slow"))
    request = _Request("workers.tasks.run_job", [0])
    worker_state.active_requests.add(request)
    try:
        job = job_create(team=world["acme"], status=Job.Status.RUNNING,
                         started_at=timezone.now() - timedelta(seconds=30))
        request.args = [job.pk]
        Job.objects.filter(pk=job.pk).update(worker=heartbeat.beat() or Worker.objects.get(name="cpu@slow"))
        later = timezone.now() + timedelta(seconds=10)          # the sweep starts 10 s after the heartbeat
        with mock.patch("django.utils.timezone.now", return_value=later), \
                mock.patch("workers.broker.broker_pending_task_ids", return_value=None):
            heartbeat.sweep()
    finally:
        worker_state.active_requests.discard(request)
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
