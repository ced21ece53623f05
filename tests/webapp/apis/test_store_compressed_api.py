"""REST for models stored compressed: ``store_compressed`` at registration, ``POST /models/<id>/store/``, and the
storage figures of a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.jobs.models import Job
from webapp.jobs.services import job_run
from webapp.registry.models import ModelEntry

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("task")]

API = "/api/v1"


@pytest.fixture
def registered(world, tiny_pair_dirs):
    from webapp.registry.services import model_register_from_path

    return model_register_from_path(team=world["acme"], user=world["alice"], name="base",
                                    path=str(tiny_pair_dirs[0]))


class ModelStoreApiTests:
    def test_store_queues_a_store_job_and_the_detail_shows_the_figures(self, world, as_user, registered, task,
                                                                      django_capture_on_commit_callbacks):
        client = as_user(world["alice"])
        before = client.get(f"{API}/models/{registered.pk}/").json()
        assert before["storage"] == "folder" and before["stored_bytes"] == 0
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(f"{API}/models/{registered.pk}/store/")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["kind"] == "store" and body["status"] == "queued"
        assert task.apply_async.called or task.delay.called
        job = job_run(job=Job.objects.get(pk=body["id"]))
        assert job.status == Job.Status.SUCCEEDED, job.error

        after = client.get(f"{API}/models/{registered.pk}/").json()
        assert after["storage"] == "compressed"
        assert after["total_bytes"] == registered.total_bytes  # still the logical size
        assert 0 < after["stored_bytes"] == after["unique_stored_bytes"]
        assert after["changes"] == []
        again = client.post(f"{API}/models/{registered.pk}/store/")
        assert again.status_code == 400 and "stored compressed already" in again.json()["message"]

    def test_viewers_may_not_and_other_teams_do_not_see_it(self, world, as_user, registered):
        assert as_user(world["victor"]).post(f"{API}/models/{registered.pk}/store/").status_code == 403
        assert as_user(world["bob"]).post(f"{API}/models/{registered.pk}/store/").status_code == 404
        assert not Job.objects.exists()

    def test_anonymous_is_refused(self, api_client, registered):
        assert api_client.post(f"{API}/models/{registered.pk}/store/").status_code in (401, 403)


class RegisterCompressedTests:
    def test_register_from_path_with_store_compressed_queues_the_job(self, world, as_user, tiny_pair_dirs):
        response = as_user(world["alice"]).post(f"{API}/models/", {
            "team": "acme", "name": "base", "path": str(tiny_pair_dirs[0]), "store_compressed": True},
            format="json")
        assert response.status_code == 201, response.json()
        job = Job.objects.get()
        assert job.kind == Job.Kind.STORE and job.model_id == response.json()["id"]

    def test_without_it_nothing_is_queued(self, world, as_user, tiny_pair_dirs):
        response = as_user(world["alice"]).post(f"{API}/models/", {
            "team": "acme", "name": "base", "path": str(tiny_pair_dirs[0])}, format="json")
        assert response.status_code == 201 and not Job.objects.exists()

    def test_upload_with_store_compressed_ends_with_the_upload_folder_gone(self, world, as_user, tiny_pair_dirs,
                                                                          django_capture_on_commit_callbacks):
        files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(tiny_pair_dirs[0].iterdir())]
        response = as_user(world["alice"]).post(f"{API}/models/upload/", {
            "team": "acme", "name": "up", "files": files, "store_compressed": "true"}, format="multipart")
        assert response.status_code == 201, response.json()
        model = ModelEntry.objects.get(pk=response.json()["id"])
        with django_capture_on_commit_callbacks(execute=True):
            job = job_run(job=Job.objects.get(model=model, kind=Job.Kind.STORE))
        assert job.status == Job.Status.SUCCEEDED, job.error
        model.refresh_from_db()
        assert model.storage == ModelEntry.Storage.COMPRESSED
        assert not Path(model.path).exists()
        detail = as_user(world["alice"]).get(f"{API}/models/{model.pk}/").json()
        assert detail["storage"] == "compressed" and detail["stored_bytes"] > 0
