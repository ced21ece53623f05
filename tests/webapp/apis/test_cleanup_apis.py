"""REST for issue 11: deletes (admins; blocked by artifacts that need a base, listed), job filters and search
(``?codec=`` works), labels and raw metrics, repeat refusal, rescan and pin."""

from __future__ import annotations


import pytest

from tests.factories import artifact_create, job_create, model_entry_create, pair_create
from webapp.jobs.models import Job
from webapp.registry.models import Artifact, ModelEntry, Pair

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("task")]

API = "/api/v1"


class DeleteApiTests:
    def test_model_delete_lists_blocking_artifacts_then_deletes_with_them(self, world, as_user, dv_dirs):
        pair = pair_create(team=world["acme"], name="p")
        artifact = artifact_create(team=world["acme"], pair=pair, compressed_bytes=7)
        client = as_user(world["alice"])
        blocked = client.delete(f"{API}/models/{pair.base_id}/")
        assert blocked.status_code == 400
        assert blocked.json()["extra"] == {"artifacts": [artifact.pk]}
        assert f"artifact #{artifact.pk} of pair p" in blocked.json()["message"]
        member = as_user(world["mallory"]).delete(f"{API}/models/{pair.base_id}/?with_artifacts=true")
        assert member.status_code == 403
        done = as_user(world["alice"]).delete(f"{API}/models/{pair.base_id}/?with_artifacts=true")
        assert done.status_code == 200, done.content
        assert done.json() == {"models": 1, "pairs": 1, "artifacts": 1, "bytes_freed": 7}
        assert not Artifact.objects.exists() and not Pair.objects.exists()
        assert list(ModelEntry.objects.values_list("pk", flat=True)) == [pair.finetuned_id]

    def test_job_delete_and_pin(self, world, as_user):
        client = as_user(world["alice"])
        running = job_create(team=world["acme"], status=Job.Status.RUNNING)
        assert client.delete(f"{API}/jobs/{running.pk}/").status_code == 400
        done = job_create(team=world["acme"], kind="decompress", status=Job.Status.SUCCEEDED)
        pinned = client.post(f"{API}/jobs/{done.pk}/pin/", {"pinned": True}, format="json")
        assert pinned.status_code == 200 and pinned.json()["pinned"] is True
        assert pinned.json()["restored_expires_at"] is None
        assert client.delete(f"{API}/jobs/{done.pk}/").json() == {"jobs": 1}
        assert client.get(f"{API}/jobs/{done.pk}/").status_code == 404


class JobFilterApiTests:
    @pytest.fixture
    def jobs(self, world):
        team = world["acme"]
        pair = pair_create(team=team, name="alpha")
        other_pair = pair_create(team=team, name="beta")
        model = model_entry_create(team=team, name="judge")
        return {
            "fm": job_create(team=team, pair=pair, codec_config={"id": "fmdelta"}, created_by=world["alice"],
                             status=Job.Status.SUCCEEDED),
            "zstd": job_create(team=team, pair=other_pair, codec_config={"id": "zstd"},
                               created_by=world["mallory"], status=Job.Status.FAILED, error="disk full"),
            "eval": job_create(team=team, kind="evaluate", model=model, codec_config={}, created_by=world["alice"]),
            "pair": pair, "model": model,
        }

    def _ids(self, client, query: str) -> list[int]:
        response = client.get(f"{API}/jobs/?{query}")
        assert response.status_code == 200, response.content
        return sorted(j["id"] for j in response.json()["results"])

    def test_codec_status_kind_pair_model_who_and_search(self, world, as_user, jobs):
        client = as_user(world["alice"])
        assert self._ids(client, "codec=fmdelta") == [jobs["fm"].pk]
        assert self._ids(client, "codec=zstd") == [jobs["zstd"].pk]
        assert self._ids(client, "status=failed") == [jobs["zstd"].pk]
        assert self._ids(client, "kind=evaluate") == [jobs["eval"].pk]
        assert self._ids(client, f"pair={jobs['pair'].pk}") == [jobs["fm"].pk]
        assert self._ids(client, f"model={jobs['model'].pk}") == [jobs["eval"].pk]
        assert self._ids(client, f"model={jobs['pair'].base_id}") == [jobs["fm"].pk]  # through its pair
        assert self._ids(client, "who=mallory") == [jobs["zstd"].pk]
        assert self._ids(client, "q=disk") == [jobs["zstd"].pk]
        assert self._ids(client, "q=judge") == [jobs["eval"].pk]
        assert self._ids(client, f"q=%23{jobs['fm'].pk}") == [jobs["fm"].pk]

    def test_pages_and_names_in_the_output(self, world, as_user, jobs):
        client = as_user(world["alice"])
        page = client.get(f"{API}/jobs/?limit=2").json()
        assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
        evaluate = client.get(f"{API}/jobs/{jobs['eval'].pk}/").json()
        assert evaluate["model_name"] == "judge" and evaluate["created_by"] == "alice"
        fm = client.get(f"{API}/jobs/{jobs['fm'].pk}/").json()
        assert fm["pair_name"] == "alpha"


class LabelsAndMetricsApiTests:
    def test_artifact_label_and_raw_metrics(self, world, as_user):
        pair = pair_create(team=world["acme"], name="p")
        artifact = artifact_create(team=world["acme"], pair=pair, codec_id="fmdelta",
                                   codec_config={"id": "fmdelta", "chunk_elements": 262144})
        job = job_create(team=world["acme"], status=Job.Status.SUCCEEDED,
                         metrics={"peak_rss_bytes": 1536, "mb_per_s": 12.5, "bytes_by_coder": {"raw": 2048}})
        client = as_user(world["alice"])
        label = client.get(f"{API}/artifacts/{artifact.pk}/").json()["label"]
        assert label == f"fmdelta (chunk_elements=262144) artifact #{artifact.pk} of pair p"
        state = client.get(f"{API}/jobs/{job.pk}/").json()
        assert state["metrics"] == {"peak_rss_bytes": 1536, "mb_per_s": 12.5, "bytes_by_coder": {"raw": 2048}}
        shown = {row["key"]: (row["label"], row["text"]) for row in state["metrics_display"]}
        assert shown["peak_rss_bytes"] == ("peak memory (RSS) during the job", "1.5 KiB")
        assert shown["mb_per_s"] == ("throughput (MB/s)", "12.5 MB/s")
        assert shown["bytes_by_coder"] == ("bytes by coder", "raw 2.0 KiB")

    def test_a_repeat_is_refused_unless_asked(self, world, as_user):
        pair = pair_create(team=world["acme"], name="p")
        artifact = artifact_create(team=world["acme"], pair=pair, codec_id="zstd",
                                   codec_config={"id": "zstd", "level": 3, "chunk_bytes": 4 << 20})
        client = as_user(world["alice"])
        body = {"kind": "compress", "pair": pair.pk, "codec_config": {"id": "zstd"}}
        refused = client.post(f"{API}/jobs/", body, format="json")
        assert refused.status_code == 400 and refused.json()["extra"] == {"artifact": artifact.pk}
        assert client.post(f"{API}/jobs/", {**body, "repeat": True}, format="json").status_code == 201


class RescanApiTests:
    def test_changes_are_shown_and_a_rescan_records_the_new_files(self, world, as_user, tiny_pair_dirs):
        from webapp.registry.services import model_register_from_path

        model = model_register_from_path(team=world["acme"], user=world["alice"], name="b",
                                         path=str(tiny_pair_dirs[0]))
        client = as_user(world["mallory"])
        assert client.get(f"{API}/models/{model.pk}/").json()["changes"] == []
        with open(tiny_pair_dirs[0] / "model.safetensors", "ab") as fh:
            fh.write(b" " * 8)
        changes = client.get(f"{API}/models/{model.pk}/").json()["changes"]
        assert len(changes) == 1 and changes[0].startswith("model.safetensors: ")
        rescanned = client.post(f"{API}/models/{model.pk}/rescan/")
        assert rescanned.status_code == 200 and rescanned.json()["changes"] == []
        size = (tiny_pair_dirs[0] / "model.safetensors").stat().st_size
        assert {f["name"]: f["size"] for f in rescanned.json()["files"]}["model.safetensors"] == size
