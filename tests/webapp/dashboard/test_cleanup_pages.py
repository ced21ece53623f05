"""Dashboard pages for issue 11: delete pages that say what goes with an object, the jobs page's filters, search
and pages, artifacts told apart by their codec options, labelled metrics, the model-changed panel with its
rescan, onboarding details (roots named, the only dataset preselected, two different models in the new-pair
form, confirmations, a favicon)."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from django.urls import reverse

from tests.webapp.dashboard.test_dashboard_pages import _team_world
from webapp.jobs.models import Job
from webapp.registry.models import Artifact, ModelEntry, Pair
from webapp.teams.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def alice(dv_dirs):
    return _team_world("alice", "Acme")


@pytest.fixture
def client_alice(client, alice):
    client.force_login(alice["user"])
    return client


def _html(client, name, *args, **params) -> str:
    response = client.get(reverse(f"dashboard:{name}", args=args), params)
    assert response.status_code == 200, response.content[:300]
    return response.content.decode()


class DeletePageTests:
    def test_the_model_page_lists_the_pair_and_artifact_that_go_with_it(self, client_alice, alice):
        html = _html(client_alice, "model_delete", alice["base"].pk)
        assert "Artifacts that still need it" in html
        assert f"zstd artifact #{alice['artifact'].pk} of pair alice-pair" in html
        assert "alice-pair" in html and 'name="with_artifacts"' in html
        url = reverse("dashboard:model_delete", args=[alice["base"].pk])
        with mock.patch("webapp.jobs.services.run_job_task"):
            Job.objects.filter(team=alice["team"]).update(status="succeeded")
            refused = client_alice.post(url, follow=True)
            assert "still need" in refused.content.decode() and ModelEntry.objects.filter(pk=alice["base"].pk).exists()
            done = client_alice.post(url, {"with_artifacts": "on"}, follow=True)
        assert "Deleted model alice-base" in done.content.decode()
        assert not Artifact.objects.exists() and not Pair.objects.exists()

    def test_members_see_no_delete_button(self, client, alice):
        alice["team"].memberships.filter(user=alice["user"]).update(role=Membership.Role.MEMBER)
        client.force_login(alice["user"])
        html = _html(client, "pair_detail", alice["pair"].pk)
        assert reverse("dashboard:pair_delete", args=[alice["pair"].pk]) not in html
        assert "Only the team's admins" in _html(client, "artifact_delete", alice["artifact"].pk)

    def test_job_delete_asks_first_and_keeps_running_jobs(self, client_alice, alice):
        html = _html(client_alice, "job_detail", alice["job"].pk)
        assert re.search(r'data-confirm="Delete job #\d+', html)
        client_alice.post(reverse("dashboard:job_delete", args=[alice["queued"].pk]))
        assert Job.objects.filter(pk=alice["queued"].pk).exists()
        client_alice.post(reverse("dashboard:job_delete", args=[alice["job"].pk]))
        assert not Job.objects.filter(pk=alice["job"].pk).exists()
        assert Artifact.objects.filter(pk=alice["artifact"].pk).exists()


class JobListPageTests:
    def test_filters_search_and_pages(self, client_alice, alice):
        team, user = alice["team"], alice["user"]
        Job.objects.bulk_create([Job(team=team, created_by=user, kind="compress", codec_config={"id": "fmdelta"},
                                     status="succeeded") for _ in range(55)])
        first = _html(client_alice, "job_list")
        assert "57 jobs" in first and "Page 1 of 2" in first and "page=2" in first
        assert "data-jobs-filtered" not in first
        second = _html(client_alice, "job_list", page=2)
        assert second.count("data-job-id=") - 1 == 7  # minus the row template
        zstd = _html(client_alice, "job_list", codec="zstd")
        assert "2 jobs match" in zstd and "data-jobs-filtered" in zstd
        found = _html(client_alice, "job_list", q=f"#{alice['queued'].pk}")
        assert "1 job match" in found
        assert "alice-pair" in _html(client_alice, "job_list", pair=alice["pair"].pk)  # the pair column
        assert "1 job match" not in _html(client_alice, "job_list", who="alice")

    def test_an_evaluate_job_names_what_it_evaluated(self, client_alice, alice):
        job = Job.objects.create(team=alice["team"], kind="evaluate", model=alice["ft"], dataset=alice["dataset"])
        html = _html(client_alice, "job_detail", job.pk)
        assert "evaluated model" in html and "alice-ft" in html
        on_artifact = Job.objects.create(team=alice["team"], kind="evaluate", artifact=alice["artifact"],
                                         pair=alice["pair"], dataset=alice["dataset"])
        html = _html(client_alice, "job_detail", on_artifact.pk)
        assert f"evaluated artifact</dt><dd>zstd artifact #{alice['artifact'].pk} of pair alice-pair" in html


class TellApartTests:
    def test_comparison_and_forms_show_codec_options(self, client_alice, alice):
        Artifact.objects.filter(pk=alice["artifact"].pk).update(codec_config={"id": "zstd", "level": 19})
        html = _html(client_alice, "pair_detail", alice["pair"].pk)
        assert '<span class="mono" data-field="codec-options">(level=19)</span>' in html
        form = _html(client_alice, "job_new")
        assert f"zstd (level=19) artifact #{alice['artifact'].pk} of pair alice-pair" in form

    def test_metrics_have_labels_with_units(self, client_alice, alice):
        Job.objects.filter(pk=alice["job"].pk).update(metrics={"peak_rss_bytes": 3 << 20, "mb_per_s": 321.5,
                                                               "seconds": 75})
        html = _html(client_alice, "job_detail", alice["job"].pk)
        assert "peak memory (RSS) during the job</dt><dd>3.0 MiB" in html
        assert "throughput (MB/s)</dt><dd>321.5 MB/s" in html
        assert "duration</dt><dd>1 min 15 s" in html
        assert "peak rss bytes" not in html


class ModelChangedPageTests:
    def test_a_changed_model_offers_a_rescan(self, client_alice, alice, dv_dirs):
        folder = dv_dirs["root"] / alice["team"].slug / "m"  # the team's own folder
        from tests.factories import tiny_model_write

        tiny_model_write(folder)
        from webapp.registry.services import model_register_from_path

        model = model_register_from_path(team=alice["team"], user=alice["user"], name="m", path=str(folder))
        assert "Changed on disk" not in _html(client_alice, "model_detail", model.pk)
        with open(folder / "model.safetensors", "ab") as fh:
            fh.write(b"\0")
        html = _html(client_alice, "model_detail", model.pk)
        assert "Changed on disk" in html and 'data-action="rescan"' in html
        client_alice.post(reverse("dashboard:model_rescan", args=[model.pk]))
        assert "Changed on disk" not in _html(client_alice, "model_detail", model.pk)


class OnboardingPageTests:
    def test_roots_are_named_where_paths_are_typed(self, client_alice, alice, dv_dirs):
        for page in ("model_list", "dataset_list"):  # the team's own folders, not the roots of every team
            assert f"<code>{dv_dirs['root'] / alice['team'].slug}</code>" in _html(client_alice, page)

    def test_the_only_dataset_is_preselected(self, client_alice, alice):
        html = _html(client_alice, "job_new", kind="evaluate", artifact=alice["artifact"].pk)
        assert re.search(rf'<option value="{alice["dataset"].pk}" selected>', html)

    def test_the_new_pair_form_preselects_two_different_models(self, client_alice, alice):
        html = _html(client_alice, "pair_list")
        base = re.search(r'<select name="base"[^>]*>.*?<option value="(\d+)" selected>', html, re.S).group(1)
        ft = re.search(r'<select name="finetuned"[^>]*>.*?<option value="(\d+)" selected>', html, re.S).group(1)
        assert base != ft and {int(base), int(ft)} == {alice["base"].pk, alice["ft"].pk}

    def test_cancel_replace_and_revoke_ask_first(self, client_alice, alice):
        assert 'data-confirm="Cancel job' in _html(client_alice, "job_detail", alice["queued"].pk)
        client_alice.post(reverse("dashboard:tokens"), {"action": "create"})
        tokens = _html(client_alice, "tokens")
        assert 'data-confirm="Replace your token?' in tokens and 'data-confirm="Revoke your token?' in tokens

    def test_favicon(self, client_alice):
        assert 'rel="icon"' in _html(client_alice, "job_list")
        response = client_alice.get("/favicon.ico")
        assert response.status_code == 301 and response["Location"].endswith("dashboard/favicon.svg")


class RestoredCopyPageTests:
    def test_pin_then_expiry_shown(self, client_alice, alice, dv_dirs):
        from django.utils import timezone

        job = Job.objects.create(team=alice["team"], kind="decompress", artifact=alice["artifact"],
                                 status="succeeded", finished_at=timezone.now(),
                                 metrics={"output_dir": str(dv_dirs["home"] / "restored" / "x")})
        folder = dv_dirs["home"] / "restored" / str(job.pk)
        folder.mkdir(parents=True)
        html = _html(client_alice, "job_detail", job.pk)
        assert "unless pinned" in html and "Pin (keep)" in html
        client_alice.post(reverse("dashboard:job_pin", args=[job.pk]), {"pinned": "1"})
        job.refresh_from_db()
        assert job.pinned and "pinned: kept" in _html(client_alice, "job_detail", job.pk)
        folder.rmdir()
        assert "expired (removed)" in _html(client_alice, "job_detail", job.pk)
