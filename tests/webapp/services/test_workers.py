"""Heartbeats, the sweep of jobs whose worker is gone, the reconciliation of queued jobs whose message is gone,
Cancel of such a job, and the claim that keeps a duplicate message from running a job twice."""

from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.utils import timezone

from tests.factories import job_create, pair_create
from webapp.jobs.models import Job, Worker
from webapp.jobs.services import job_cancel, job_retry, job_run
from webapp.jobs.worker_selectors import job_orphaned, jobs_orphaned, worker_list_live, worker_queues_online
from webapp.jobs.worker_services import jobs_reconcile, jobs_sweep, worker_heartbeat, worker_stopped

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def timings(settings):
    settings.DELTAVAULT_WORKER_TIMEOUT = 60
    settings.DELTAVAULT_RECONCILE_GRACE = 30
    settings.DELTAVAULT_ORPHAN_REQUEUE = False


def beat(name="cpu@a", *, ago=0.0, held=(), queues=("cpu",), device=None) -> Worker:
    return worker_heartbeat(name=name, hostname="a", pid=1, queues=list(queues), device=device or {"cpu_cores": 4},
                            held_jobs=list(held), at=timezone.now() - timedelta(seconds=ago))


def running_job(world, worker, *, started_ago=30.0, **fields) -> Job:
    return job_create(team=world["acme"], status=Job.Status.RUNNING, worker=worker,
                      started_at=timezone.now() - timedelta(seconds=started_ago), **fields)


def leftovers(settings, job) -> list[Path]:
    folders = [Path(settings.DELTAVAULT_TMP_DIR) / f"job-{job.pk}", Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "artifact.dvz.partial-1").write_bytes(b"half")
    return folders


class HeartbeatTests:
    def test_heartbeat_creates_then_updates_one_row(self, world):
        beat(held=[3])
        worker = beat(held=[4, 4], queues=["gpu", "cpu"], device={"cpu_cores": 8, "gpu_name": "H200"})
        assert Worker.objects.count() == 1
        assert worker.queues == ["cpu", "gpu"] and worker.held_jobs == [4] and worker.device["gpu_name"] == "H200"

    def test_live_workers_and_their_queues(self, world):
        beat("cpu@a", queues=["cpu"])
        beat("gpu@b", queues=["gpu"], ago=61)   # silent for longer than the timeout: gone
        assert [w.name for w in worker_list_live()] == ["cpu@a"]
        assert worker_queues_online() == {"cpu"}
        worker_stopped(name="cpu@a")
        assert worker_queues_online() == set()

    def test_live_worker_lists_its_running_job(self, world):
        worker = beat()
        job = running_job(world, worker)
        assert [j.pk for j in worker_list_live()[0].current_jobs] == [job.pk]


class OrphanTests:
    def test_a_job_whose_worker_stopped_beating_is_orphaned(self, world):
        worker = beat(ago=61)
        job = running_job(world, worker, started_ago=120)
        assert job_orphaned(job=job)

    def test_a_job_its_live_worker_holds_is_not(self, world):
        worker = beat()
        job = running_job(world, worker)
        Worker.objects.filter(pk=worker.pk).update(held_jobs=[job.pk])
        job.refresh_from_db()
        assert not job_orphaned(job=job)

    def test_a_job_its_live_worker_no_longer_holds_is(self, world):
        # The task ended without recording the outcome (the failure hook could not reach the database).
        worker = beat(held=[])
        job = running_job(world, worker, started_ago=30)
        assert job_orphaned(job=job)

    def test_a_claim_newer_than_the_last_heartbeat_is_not_judged(self, world):
        worker = beat(held=[], ago=5)
        job = running_job(world, worker, started_ago=1)
        assert not job_orphaned(job=job)


class SweepTests:
    def test_sweep_fails_the_job_and_removes_its_partial_files(self, world, settings, collect_events):
        worker = beat(ago=90)
        job = running_job(world, worker, started_ago=300)
        folders = leftovers(settings, job)
        events = collect_events("team-acme")
        assert jobs_sweep() == {job.pk: "failed"}
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and job.finished_at is not None
        assert worker.name in job.error and "retry" in job.error
        assert not any(folder.exists() for folder in folders)
        assert events.drain()[-1]["job"]["status"] == "failed"
        assert jobs_sweep() == {}                      # once only

    def test_retry_works_on_a_swept_job(self, world):
        job = running_job(world, beat(ago=90), started_ago=300, pair=pair_create(team=world["acme"]))
        jobs_sweep()
        job.refresh_from_db()
        with mock.patch("webapp.jobs.services.run_job_task"):
            new = job_retry(job=job, user=world["alice"])
        assert new.retry_of_id == job.pk and new.status == Job.Status.QUEUED

    def test_requeue_once_when_configured(self, world, settings, django_capture_on_commit_callbacks):
        settings.DELTAVAULT_ORPHAN_REQUEUE = True
        job = running_job(world, beat(ago=90), started_ago=300, attempts=1)
        folders = leftovers(settings, job)
        with mock.patch("webapp.jobs.services.run_job_task") as task:
            assert jobs_sweep() == {job.pk: "queued"}
        job.refresh_from_db()
        assert job.status == Job.Status.QUEUED and job.worker is None and job.started_at is None
        assert task.apply_async.call_args.kwargs["args"] == [job.pk]
        assert not any(folder.exists() for folder in folders)
        # The second time it dies, it fails.
        Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, attempts=2, worker=beat("cpu@b", ago=90),
                                             started_at=timezone.now() - timedelta(seconds=300))
        with mock.patch("webapp.jobs.services.run_job_task"):
            assert jobs_sweep() == {job.pk: "failed"}

    def test_a_job_finished_meanwhile_is_left_alone(self, world):
        worker = beat(ago=90)
        job = running_job(world, worker, started_ago=300)
        orphans = jobs_orphaned()
        Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)   # another sweeper or the job itself
        from webapp.jobs.services import job_orphan_recover

        assert job_orphan_recover(job=orphans[0]) is None
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED

    def test_long_dead_workers_are_forgotten(self, world):
        beat("old@x", ago=2 * 86400)
        beat("new@y")
        jobs_sweep()
        assert list(Worker.objects.values_list("name", flat=True)) == ["new@y"]


class CancelOrphanTests:
    def test_cancel_finishes_a_job_whose_worker_is_gone_at_once(self, world, settings):
        job = running_job(world, beat(ago=90), started_ago=300)
        folders = leftovers(settings, job)
        job = job_cancel(job=job, user=world["alice"])
        assert job.status == Job.Status.CANCELLED and job.finished_at is not None
        assert not any(folder.exists() for folder in folders)

    def test_cancel_of_a_job_a_live_worker_runs_only_asks(self, world):
        worker = beat()
        job = running_job(world, worker)
        Worker.objects.filter(pk=worker.pk).update(held_jobs=[job.pk])
        job = job_cancel(job=job, user=world["alice"])
        assert job.status == Job.Status.RUNNING and job.cancel_requested


class ReconcileTests:
    def _old(self, job):
        Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(seconds=60))

    def test_a_queued_job_without_a_message_is_sent_again(self, world):
        lost = job_create(team=world["acme"], celery_task_id="lost")
        waiting = job_create(team=world["acme"], celery_task_id="waiting")
        fresh = job_create(team=world["acme"], celery_task_id="fresh")   # just submitted: on_commit may not have run
        self._old(lost)
        self._old(waiting)
        with mock.patch("webapp.jobs.services.run_job_task") as task:
            assert jobs_reconcile(pending_task_ids={"waiting"}) == [lost.pk]
        assert task.apply_async.call_args.kwargs == {"args": [lost.pk], "queue": "cpu", "task_id": "lost"}
        assert fresh.pk not in [c.kwargs["args"][0] for c in task.apply_async.call_args_list]


class ClaimTests:
    """A duplicate message (re-sent by the reconciliation, redelivered by the broker) never runs a job twice."""

    def test_a_second_message_for_a_running_job_does_nothing(self, world):
        worker = beat()
        job = running_job(world, worker)
        with mock.patch("webapp.jobs.services.JOB_KINDS") as kinds:
            again = job_run(job=job, worker_name="cpu@other")
        kinds.__getitem__.assert_not_called()
        assert again.status == Job.Status.RUNNING and again.worker_id == worker.pk and again.attempts == 0

    def test_the_claim_records_the_worker_and_counts_attempts(self, world):
        worker = beat()
        job = job_create(team=world["acme"], cancel_requested=True)
        job = job_run(job=job, worker_name=worker.name)
        assert job.worker_id == worker.pk and job.attempts == 1 and job.status == Job.Status.CANCELLED

    def test_a_retried_task_may_reclaim_its_own_row(self, world):
        worker = beat()
        job = running_job(world, worker, cancel_requested=True)
        assert job_run(job=job, worker_name="cpu@other", resume=True).status == Job.Status.RUNNING
        assert job_run(job=job, worker_name=worker.name, resume=True).status == Job.Status.CANCELLED

    def test_a_gpu_job_on_a_worker_without_a_gpu_says_so_in_its_log(self, world):
        worker = beat("both@a", queues=["cpu", "gpu"], device={"cpu_cores": 2})
        job = job_create(team=world["acme"], queue="gpu", cancel_requested=True)
        job = job_run(job=job, worker_name=worker.name)
        assert "by worker both@a" in job.log_tail
        assert "has no GPU torch can use: the job runs on its CPU" in job.log_tail
