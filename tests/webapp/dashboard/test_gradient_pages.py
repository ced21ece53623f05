"""The gradient-set pages: list and register, the detail page with its rate table, the compress form."""

from __future__ import annotations

from unittest import mock

import pytest
from django.urls import reverse

from tests.webapp.apis.test_gradient_sets import write_gradients
from webapp.jobs.models import Job
from webapp.jobs.services import job_run
from webapp.registry.models import GradientSet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def task():
    with mock.patch("webapp.jobs.services.run_job_task") as task:
        yield task


def test_register_compress_and_see_the_rate_table(client, world, dv_dirs):
    client.force_login(world["alice"])
    folder = write_gradients(dv_dirs["acme"] / "grads", steps=2)
    assert client.get(reverse("dashboard:gradient_set_list")).status_code == 200
    response = client.post(reverse("dashboard:gradient_set_list"), {"name": "run-1", "path": str(folder)})
    entry = GradientSet.objects.get(name="run-1")
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:gradient_set_detail",
                                                                           args=[entry.pk])
    page = client.get(response["Location"]).content.decode()
    assert "Nothing compressed yet" in page and "seen" in page  # the non-float tensor is listed

    for codec in ("lmgc", "zstd"):
        response = client.post(reverse("dashboard:gradient_set_detail", args=[entry.pk]), {"codec": codec})
        assert response.status_code == 302, response.content.decode()[:2000]
        job_run(job=Job.objects.latest("id"))
    page = client.get(reverse("dashboard:gradient_set_detail", args=[entry.pk])).content.decode()
    assert 'id="rate-table"' in page and page.count("<tr><td>lmgc</td>") == 1 and "<tr><td>zstd</td>" in page
    assert "builtin" in page

    client.force_login(world["bob"])
    assert client.get(reverse("dashboard:gradient_set_detail", args=[entry.pk])).status_code == 404
