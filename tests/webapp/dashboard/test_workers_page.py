"""The workers page, and the flag on a job waiting on a queue no live worker serves (job page and form)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.factories import job_create, pair_create
from webapp.jobs.models import Job
from webapp.jobs.worker_services import worker_heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_alice(client, world):
    client.force_login(world["alice"])
    return client


def test_workers_page_lists_live_workers(client_alice, world):
    gpu = worker_heartbeat(name="gpu@box", hostname="box", pid=42, queues=["gpu"], held_jobs=[],
                           device={"cpu_cores": 16, "gpu_name": "NVIDIA H200", "gpu_memory_bytes": 150 * 1024**3})
    worker_heartbeat(name="cpu@gone", hostname="gone", pid=1, queues=["cpu"], held_jobs=[], device={"cpu_cores": 2},
                     at=timezone.now() - timedelta(hours=1))
    job = job_create(team=world["acme"], status=Job.Status.RUNNING, worker=gpu, progress=42.0)
    job_create(team=world["other"], status=Job.Status.RUNNING, worker=gpu)
    html = client_alice.get(reverse("dashboard:worker_list")).content.decode()
    assert 'data-worker="gpu@box"' in html and "cpu@gone" not in html
    assert "16 CPU cores" in html and "NVIDIA H200" in html and "150.0 GiB" in html
    assert reverse("dashboard:job_detail", args=[job.pk]) in html and "42.0%" in html
    assert "2 running (other teams' jobs not shown)" in html
    assert 'href="/workers/"' in html                        # in the navigation


def test_workers_page_without_workers_says_so(client_alice):
    html = client_alice.get(reverse("dashboard:worker_list")).content.decode()
    assert "No live worker" in html


def test_job_page_flags_a_queue_no_live_worker_serves(client_alice, world):
    job = job_create(team=world["acme"], queue="gpu")
    html = client_alice.get(reverse("dashboard:job_detail", args=[job.pk])).content.decode()
    assert "No live worker serves the gpu queue" in html
    worker_heartbeat(name="gpu@box", hostname="box", pid=1, queues=["gpu"], held_jobs=[], device={"cpu_cores": 1})
    html = client_alice.get(reverse("dashboard:job_detail", args=[job.pk])).content.decode()
    assert "No live worker serves" not in html


def test_job_form_marks_offline_queues_and_warns_after_submit(client_alice, world, settings):
    from unittest import mock

    worker_heartbeat(name="cpu@box", hostname="box", pid=1, queues=["cpu"], held_jobs=[], device={"cpu_cores": 1})
    html = client_alice.get(reverse("dashboard:job_new")).content.decode()
    assert "GPU worker (no live worker)" in html and "CPU worker (no live worker)" not in html
    assert '<option value="auto" selected>' in html
    pair = pair_create(team=world["acme"])
    with mock.patch("webapp.jobs.services.run_job_task"):
        response = client_alice.post(reverse("dashboard:job_new"), {
            "kind": "compress", "pair": pair.pk, "codec": "zstd", "queue": "gpu"}, follow=True)
    assert "No live worker serves the gpu queue" in response.content.decode()
