"""workers.tasks.run_job, called synchronously (no broker): it loads the row and delegates to job_run."""

from unittest import mock

import pytest

from tests.factories import job_create, pair_create
from webapp.jobs.models import Job
from workers.tasks import db_retry_countdown, run_job

pytestmark = pytest.mark.django_db


class RunJobTaskTests:
    def test_delegates_to_job_run(self, world):
        job = job_create(team=world["acme"], pair=pair_create(team=world["acme"]))

        def fake_run(*, job, **_):
            job.status = Job.Status.SUCCEEDED
            return job

        with mock.patch("webapp.jobs.services.job_run", side_effect=fake_run) as job_run:
            result = run_job.apply(args=[job.pk]).get()
        assert job_run.call_args.kwargs["job"].pk == job.pk
        assert result == {"job_id": job.pk, "status": "succeeded"}

    def test_missing_job_is_reported_not_raised(self, world):
        assert run_job.run(999_999) == {"job_id": 999_999, "status": "missing"}

    def test_an_escaping_error_fails_the_job_through_on_failure(self, world):
        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        with mock.patch("webapp.jobs.services.job_run", side_effect=MemoryError("out of memory")):
            outcome = run_job.apply(args=[job.pk], throw=False)
        assert outcome.failed()
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and job.error == "MemoryError: out of memory"

    def test_a_real_compress_job_end_to_end_in_process(self, world, tiny_pair_dirs):
        from webapp.registry.services import model_register_from_path, pair_create as real_pair_create

        team, user = world["acme"], world["alice"]
        base = model_register_from_path(team=team, user=user, name="b", path="tiny-base")
        ft = model_register_from_path(team=team, user=user, name="f", path="tiny-ft")
        pair = real_pair_create(team=team, user=user, name="p", base=base, finetuned=ft)
        job = job_create(team=team, pair=pair, codec_config={"id": "zstd"})
        assert run_job.apply(args=[job.pk]).get() == {"job_id": job.pk, "status": "succeeded"}
        job.refresh_from_db()
        assert job.output_artifact.ratio > 0


class DatabaseErrorTests:
    """A database error in the task (connection slots exhausted) used to fail the task, fail the failure hook the
    same way, and acknowledge the message: the job stayed queued for ever."""

    def test_a_database_error_is_retried_with_backoff_and_the_job_runs(self, world):
        from django.db import OperationalError

        job = job_create(team=world["acme"], pair=pair_create(team=world["acme"]))
        calls = []

        def flaky_run(*, job, worker_name, resume):
            calls.append(resume)
            if len(calls) == 1:
                raise OperationalError("FATAL: remaining connection slots are reserved")
            job.status = Job.Status.SUCCEEDED
            return job

        with mock.patch("webapp.jobs.services.job_run", side_effect=flaky_run), \
                mock.patch("workers.tasks.db_retry_countdown", wraps=db_retry_countdown) as countdown:
            result = run_job.apply(args=[job.pk], throw=False).get()
        assert result == {"job_id": job.pk, "status": "succeeded"}
        assert calls == [False, True]          # the retry may reclaim the row this worker had claimed
        assert countdown.call_args.args == (0,)

    def test_backoff_doubles_up_to_a_minute(self):
        assert [db_retry_countdown(n) for n in (0, 1, 2, 3, 10)] == [1, 2, 4, 8, 60]

    def test_the_failure_hook_retries_database_errors(self, world):
        from django.db import OperationalError

        from webapp.jobs.services import job_fail as real_job_fail

        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        errors = [OperationalError("too many clients")]

        def flaky_fail(**kwargs):
            if errors:
                raise errors.pop()
            return real_job_fail(**kwargs)

        with mock.patch("webapp.jobs.services.job_fail", side_effect=flaky_fail) as job_fail, \
                mock.patch("workers.tasks.time.sleep") as sleep, \
                mock.patch("webapp.jobs.services.job_run", side_effect=MemoryError("oom")):
            run_job.apply(args=[job.pk], throw=False)
        assert job_fail.call_count == 2 and sleep.call_count == 1
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED

    def test_a_database_that_stays_down_leaves_the_row_for_the_sweep(self, world):
        from django.db import OperationalError

        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        with mock.patch("webapp.jobs.services.job_fail", side_effect=OperationalError("down")) as job_fail, \
                mock.patch("workers.tasks.time.sleep"), \
                mock.patch("webapp.jobs.services.job_run", side_effect=MemoryError("oom")):
            outcome = run_job.apply(args=[job.pk], throw=False)
        assert outcome.failed() and job_fail.call_count == 4
        job.refresh_from_db()
        assert job.status == Job.Status.RUNNING   # not lost: jobs_sweep finds it (no worker holds it)


class CeleryConfigTests:
    def test_app_is_configured_from_django_settings(self, settings):
        from workers.celery_app import app

        conf = app.conf
        assert conf.task_acks_late is True and conf.worker_prefetch_multiplier == 1
        assert conf.task_soft_time_limit < conf.task_time_limit
        assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
        assert conf.accept_content == ["json"] and conf.task_serializer == "json"
        assert conf.task_default_queue == "cpu" and conf.worker_hijack_root_logger is False
        assert conf.result_extended is True and conf.worker_send_task_events is True
        assert "workers.tasks.run_job" in app.tasks

    def test_job_goes_to_its_queue(self, world, django_capture_on_commit_callbacks):
        from webapp.jobs.services import job_submit

        pair = pair_create(team=world["acme"])
        with mock.patch("workers.tasks.run_job.apply_async") as apply_async, \
                django_capture_on_commit_callbacks(execute=True):
            job = job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=pair,
                             codec_config="zstd", queue="gpu")
        assert apply_async.call_args.kwargs["queue"] == "gpu"
        assert apply_async.call_args.kwargs["args"] == [job.pk]

    def test_importing_the_web_app_and_workers_does_not_import_torch(self):
        import subprocess
        import sys

        code = ("import os, sys; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings.test';"
                "import django; django.setup();"
                "import webapp.urls, workers.tasks, webapp.jobs.services, webapp.registry.services;"
                "print('torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False"


class WorkerLostTests:
    def test_a_killed_pool_process_fails_the_job(self, world):
        from billiard.exceptions import WorkerLostError
        from celery.signals import task_failure

        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        exc = WorkerLostError("Worker exited prematurely: signal 9 (SIGKILL) Job: 0.")
        task_failure.send(sender=run_job, task_id="x", exception=exc, args=[job.pk], kwargs={}, einfo=None)
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED and "SIGKILL" in job.error

    def test_other_failures_are_left_to_on_failure(self, world):
        from celery.signals import task_failure

        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        task_failure.send(sender=run_job, task_id="x", exception=ValueError("x"), args=[job.pk], kwargs={},
                          einfo=None)
        job.refresh_from_db()
        assert job.status == Job.Status.RUNNING
