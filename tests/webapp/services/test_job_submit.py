from unittest import mock

import modelcodecs
import pytest
from django.core.exceptions import PermissionDenied

from tests.factories import artifact_create, dataset_create, model_entry_create, pair_create
from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_cancel, job_retry, job_submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def task():
    with mock.patch("webapp.jobs.services.run_job_task") as task:
        yield task


class JobSubmitTests:
    def test_compress_creates_a_queued_row_and_queues_the_task_on_commit(
        self, world, task, django_capture_on_commit_callbacks, collect_events
    ):
        pair = pair_create(team=world["acme"])
        events = collect_events("team-acme")
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            job = job_submit(team=world["acme"], user=world["mallory"], kind="compress", pair=pair,
                             codec_config={"id": "zstd"}, queue="gpu")
            task.apply_async.assert_not_called()  # not before the commit
        assert len(callbacks) == 1
        job.refresh_from_db()
        assert job.status == Job.Status.QUEUED
        assert job.codec_config["id"] == "zstd"
        assert set(job.codec_config) > {"id"}  # normalised: defaults filled in
        task.apply_async.assert_called_once_with(args=[job.pk], queue="gpu", task_id=job.celery_task_id)
        received = events.drain()
        assert [e["job"]["id"] for e in received] == [job.pk]
        assert received[0]["type"] == "job.update" and received[0]["job"]["status"] == "queued"

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"kind": "compress", "codec_config": {"id": "no-such-codec"}}, "unknown codec"),
            ({"kind": "compress", "codec_config": {"id": "zstd", "bogus": 1}}, "unknown option"),
            ({"kind": "compress", "codec_config": None}, "needs a codec config"),
            ({"kind": "explode", "codec_config": {"id": "zstd"}}, "Unknown job kind"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "queue": "tpu"}, "Unknown queue"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"threads": 0}}, "threads"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"color": "red"}}, "Unknown job option"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": 0}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": "lots"}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": -5}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": 1.5}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": True}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": 10**30}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": {"max_tokens": [1]}}, "max_tokens"),
            ({"kind": "compress", "codec_config": {"id": "zstd"}, "options": ["threads"]}, "options must be"),
        ],
    )
    def test_invalid_input_creates_no_row(self, world, task, kwargs, message):
        pair = pair_create(team=world["acme"])
        with pytest.raises(ApplicationError, match=message):
            job_submit(team=world["acme"], user=world["alice"], pair=pair, **kwargs)
        assert Job.objects.count() == 0
        task.apply_async.assert_not_called()

    def test_compress_without_pair_is_refused(self, world, task):
        with pytest.raises(ApplicationError, match="needs a pair"):
            job_submit(team=world["acme"], user=world["alice"], kind="compress", codec_config="zstd")
        assert Job.objects.count() == 0

    def test_objects_of_another_team_are_refused(self, world, task):
        foreign = pair_create(team=world["other"])
        with pytest.raises(ApplicationError, match="another team"):
            job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=foreign, codec_config="zstd")
        assert Job.objects.count() == 0

    def test_viewer_may_not_submit(self, world, task):
        pair = pair_create(team=world["acme"])
        with pytest.raises(PermissionDenied):
            job_submit(team=world["acme"], user=world["victor"], kind="compress", pair=pair, codec_config="zstd")
        with pytest.raises(PermissionDenied):  # not a member at all
            job_submit(team=world["acme"], user=world["bob"], kind="compress", pair=pair, codec_config="zstd")
        assert Job.objects.count() == 0

    def test_decompress_takes_the_artifacts_pair_and_config(self, world, task):
        pair = pair_create(team=world["acme"])
        artifact = artifact_create(team=world["acme"], pair=pair, codec_config={"id": "zstd", "level": 5})
        job = job_submit(team=world["acme"], user=world["alice"], kind="decompress", artifact=artifact)
        assert job.pair == pair and job.codec_config == {"id": "zstd", "level": 5}

    def test_evaluate_needs_a_dataset_and_exactly_one_of_model_or_artifact(self, world, task):
        team = world["acme"]
        model = model_entry_create(team=team)
        artifact = artifact_create(team=team)
        dataset = dataset_create(team=team)
        with pytest.raises(ApplicationError, match="needs a dataset"):
            job_submit(team=team, user=world["alice"], kind="evaluate", model=model)
        with pytest.raises(ApplicationError, match="exactly one"):
            job_submit(team=team, user=world["alice"], kind="evaluate", model=model, artifact=artifact,
                       dataset=dataset)
        with pytest.raises(ApplicationError, match="exactly one"):
            job_submit(team=team, user=world["alice"], kind="evaluate", dataset=dataset)
        assert Job.objects.count() == 0
        job = job_submit(team=team, user=world["alice"], kind="evaluate", model=model, dataset=dataset)
        assert job.kind == "evaluate" and job.model == model

    def test_broker_down_marks_the_job_failed(self, world, task, django_capture_on_commit_callbacks):
        task.apply_async.side_effect = ConnectionError("redis is down")
        pair = pair_create(team=world["acme"])
        with django_capture_on_commit_callbacks(execute=True):
            job = job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=pair,
                             codec_config="zstd")
        job.refresh_from_db()
        assert job.status == Job.Status.FAILED
        assert "redis is down" in job.error


class JobCancelRetryTests:
    def test_cancel_a_queued_job_finishes_it_at_once(self, world, task, collect_events):
        pair = pair_create(team=world["acme"])
        job = job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=pair, codec_config="zstd")
        events = collect_events(f"job-{job.pk}")
        job = job_cancel(job=job, user=world["mallory"])
        assert job.status == Job.Status.CANCELLED and job.cancel_requested and job.finished_at
        assert events.drain()[-1]["job"]["status"] == "cancelled"

    def test_cancel_a_running_job_only_asks(self, world, task):
        job = Job.objects.create(team=world["acme"], kind="compress", status=Job.Status.RUNNING)
        job = job_cancel(job=job, user=world["alice"])
        assert job.status == Job.Status.RUNNING and job.cancel_requested

    def test_cancel_refuses_finished_jobs_and_viewers(self, world, task):
        done = Job.objects.create(team=world["acme"], kind="compress", status=Job.Status.SUCCEEDED)
        with pytest.raises(ApplicationError, match="already"):
            job_cancel(job=done, user=world["alice"])
        queued = Job.objects.create(team=world["acme"], kind="compress")
        with pytest.raises(PermissionDenied):
            job_cancel(job=queued, user=world["victor"])
        queued.refresh_from_db()
        assert queued.status == Job.Status.QUEUED and not queued.cancel_requested

    def test_retry_makes_a_new_job_with_the_same_inputs(self, world, task):
        pair = pair_create(team=world["acme"])
        failed = Job.objects.create(team=world["acme"], kind="compress", pair=pair, status=Job.Status.FAILED,
                                    codec_config={"id": "zstd", "level": 7}, options={"threads": 1}, queue="gpu")
        job = job_retry(job=failed, user=world["mallory"])
        assert job.pk != failed.pk and job.retry_of == failed and job.status == Job.Status.QUEUED
        normalised = modelcodecs.get_codec(failed.codec_config).get_config()
        assert (job.pair, job.codec_config, job.options, job.queue) == (pair, normalised, {"threads": 1}, "gpu")

    def test_retry_refuses_jobs_that_did_not_fail(self, world, task):
        running = Job.objects.create(team=world["acme"], kind="compress", status=Job.Status.RUNNING)
        with pytest.raises(ApplicationError, match="Only failed or cancelled"):
            job_retry(job=running, user=world["alice"])
        assert Job.objects.count() == 1
