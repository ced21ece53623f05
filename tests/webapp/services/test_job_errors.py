"""Job errors shown to users carry no absolute server paths (the worker's log keeps the details)."""

from pathlib import Path
from unittest import mock

import modelcodecs
import pytest

from tests.factories import dataset_create
from webapp.core.redact import redact_paths
from webapp.jobs.models import Job
from webapp.jobs.services import job_fail, job_run

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("text, expected", [
    ("/srv/dv/tmp/job-3/artifact.dvz: truncated artifact", "…/artifact.dvz: truncated artifact"),
    ("[Errno 2] No such file or directory: '/srv/models/acme/x'", "[Errno 2] No such file or directory: '…/x'"),
    ("ratio 2/3 at 400 MB/s", "ratio 2/3 at 400 MB/s"),
    ("folder /srv/dv/restored/ gone", "folder …/ gone"),
    ("no paths here", "no paths here"),
])
def test_redact_paths(text, expected):
    assert redact_paths(text) == expected


def test_a_missing_dataset_is_named_without_its_path(world, pair, dv_dirs):
    dataset = dataset_create(team=world["acme"], path=dv_dirs["acme"] / "gone.txt")
    job = job_run(job=Job.objects.create(team=world["acme"], kind="evaluate", model=pair.finetuned,
                                         dataset=dataset))
    assert job.status == Job.Status.FAILED
    assert str(dv_dirs["home"]) not in job.error and str(dv_dirs["home"]) not in job.log_tail
    assert "gone.txt" in job.error


def test_codec_and_os_errors_are_redacted(world, pair, dv_dirs):
    job = Job.objects.create(team=world["acme"], kind="compress", pair=pair, codec_config={"id": "zstd"})
    where = Path(pair.finetuned.path) / "model.safetensors"
    with mock.patch.object(modelcodecs, "compress_model", side_effect=OSError(5, "Input/output error", str(where))):
        job = job_run(job=job)
    assert job.status == Job.Status.FAILED and str(dv_dirs["home"]) not in job.error + job.log_tail
    assert "model.safetensors" in job.error


def test_job_fail_redacts_the_error_and_the_log(world, pair, dv_dirs):
    job = Job.objects.create(team=world["acme"], kind="compress", pair=pair, codec_config={"id": "zstd"},
                             status=Job.Status.RUNNING)
    job = job_fail(job=job, error=f"WorkerLostError: {dv_dirs['home']}/tmp/x",
                   log=f'Traceback:\n  File "{dv_dirs["home"]}/site-packages/celery/x.py", line 1')
    assert str(dv_dirs["home"]) not in job.error + job.log_tail
