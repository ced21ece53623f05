"""The team Storage page (totals, the two charts, models with "Store compressed"), the store button's job, the
register form's "store compressed" checkbox and the model page's storage panel."""

from unittest import mock

import pytest
from django.urls import reverse

from tests.webapp.storage_world import storage_world_build
from webapp.jobs.models import Job
from webapp.registry.models import ModelEntry

pytestmark = pytest.mark.django_db


@pytest.fixture
def built(world):
    return storage_world_build(team=world["acme"], other=world["other"])


@pytest.fixture
def task():
    with mock.patch("webapp.jobs.services.run_job_task") as task:
        yield task


def _page(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("dashboard:storage"))
    assert response.status_code == 200
    return response.content.decode()


class StoragePageTests:
    def test_totals_charts_definitions_and_models(self, client, world, built):
        html = _page(client, world["alice"])
        assert 'id="nav-storage"' in html and 'class="active" id="nav-storage"' in html
        assert "(16,864 B)" in html and "(10,006 B)" in html   # logical, on disk
        assert html.count("<svg") == 2
        assert 'data-label="Models stored compressed" data-logical="2300" data-on-disk="212"' in html
        assert 'data-label="fmdelta" data-logical="700" data-on-disk="70"' in html
        assert 'data-label="tensor store: shared tensors once" data-logical="2300" data-on-disk="1700"' in html
        a = built["models"]["a"]
        assert f'data-model-id="{a.pk}" data-storage="compressed" data-logical="1000" data-on-disk="118"' in html
        for term in ("logical bytes", "bytes on disk", "saved", "ratio", "shared"):
            assert f"<dt>{term}</dt>" in html
        assert "Original bytes / bytes needed besides the base" in html
        assert "lmgc #" in html and "pinned" not in html
        assert f'data-restored="job #{built["restored"].pk}"' in html and 'data-restored="model a"' in html

    def test_store_buttons_for_folder_models_and_writers_only(self, client, world, built):
        html = _page(client, world["mallory"])  # a member may store
        assert html.count('data-action="store"') == 2   # d and e; a, b, c are stored already
        assert f'action="{reverse("dashboard:model_store", args=[built["models"]["d"].pk])}"' in html
        assert "data-confirm=\"Store d compressed?" in html and "The uploaded files are then removed" in html
        assert 'data-action="store"' not in _page(client, world["victor"])   # a viewer reads only

    def test_the_button_submits_the_store_job_and_opens_its_live_page(self, client, world, built, task,
                                                                      django_capture_on_commit_callbacks):
        client.force_login(world["mallory"])
        model = built["models"]["d"]
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("dashboard:model_store", args=[model.pk]))
        job = Job.objects.get(kind=Job.Kind.STORE)
        assert (job.model, job.team, job.created_by) == (model, world["acme"], world["mallory"])
        assert response.status_code == 302 and response["Location"] == reverse("dashboard:job_detail", args=[job.pk])
        assert task.apply_async.call_args.kwargs["args"] == [job.pk]
        html = _page(client, world["mallory"])   # while it is queued, the row links the job instead
        assert f'data-store-job="{job.pk}"' in html and html.count('data-action="store"') == 1

    def test_a_viewer_is_refused_and_nothing_is_queued(self, client, world, built, task):
        client.force_login(world["victor"])
        response = client.post(reverse("dashboard:model_store", args=[built["models"]["d"].pk]), follow=True)
        assert not Job.objects.filter(kind=Job.Kind.STORE).exists() and not task.apply_async.called
        assert response.redirect_chain[-1][0] == reverse("dashboard:storage")
        assert "class=\"error\"" in response.content.decode()

    def test_other_teams_models_look_missing(self, client, world, built):
        client.force_login(world["bob"])
        assert client.post(reverse("dashboard:model_store", args=[built["models"]["d"].pk])).status_code == 404
        assert not Job.objects.filter(kind=Job.Kind.STORE).exists()


class ModelPagesTests:
    def test_model_page_shows_storage_state_and_stored_bytes(self, client, world, built):
        client.force_login(world["alice"])
        html = client.get(reverse("dashboard:model_detail", args=[built["models"]["a"].pk])).content.decode()
        assert 'data-storage="compressed"' in html and "stored compressed" in html
        assert '<dd data-field="stored-bytes">118 B' in html and "18 B of it its share of 1 object" in html
        assert '<dd data-field="objects-bytes">152 B, 100 B of them its own' in html
        assert 'data-action="store"' not in html
        html = client.get(reverse("dashboard:model_detail", args=[built["models"]["e"].pk])).content.decode()
        assert "server folder (the user's)" in html and 'data-action="store"' in html

    @pytest.mark.parametrize("store", [True, False])
    def test_register_form_stores_compressed_when_asked(self, client, world, tiny_pair_dirs, task, store):
        client.force_login(world["alice"])
        form = {"source": "path", "path-name": "tiny", "path-path": str(tiny_pair_dirs[0])}
        response = client.post(reverse("dashboard:model_list"), {**form, **({"path-store_compressed": "on"}
                                                                             if store else {})})
        model = ModelEntry.objects.get(name="tiny")
        jobs = list(Job.objects.filter(kind=Job.Kind.STORE, model=model))
        if store:
            assert len(jobs) == 1 and response["Location"] == reverse("dashboard:job_detail", args=[jobs[0].pk])
        else:
            assert jobs == [] and response["Location"] == reverse("dashboard:model_detail", args=[model.pk])

    def test_register_form_offers_the_checkbox(self, client, world):
        client.force_login(world["alice"])
        html = client.get(reverse("dashboard:model_list")).content.decode()
        assert 'name="path-store_compressed"' in html and 'name="upload-store_compressed"' in html
