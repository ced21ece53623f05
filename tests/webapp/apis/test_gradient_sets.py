"""Gradient sets through REST: register (server path, upload), compress / decompress-and-verify jobs with the
built-in prior and with a registered causal LM as prior, the rate table, and what is refused at submit."""

import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.jobs.models import Job
from webapp.jobs.services import job_run
from webapp.registry.models import Artifact, GradientSet

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("task")]

API = "/api/v1"


def write_gradients(folder, steps=3):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for step in range(steps):
        grads = (rng.standard_t(4, (32, 24)) * 1e-3).astype(np.float32)
        grads[:, :3] = 0.0
        save_file({"fc.weight": grads, "fc.bias": (rng.standard_normal(24) * 1e-2).astype(np.float32),
                   "seen": np.array([step], dtype=np.int64)}, str(folder / f"step_{step:08d}.safetensors"),
                  metadata={"step": str(step)})
    return folder


def _run_latest(kind: str) -> Job:
    job = Job.objects.filter(kind=kind).latest("id")
    return job_run(job=job)


class GradientSetApiTests:
    def test_register_compress_decompress_and_rate_table(self, world, as_user, dv_dirs, collect_events):
        client = as_user(world["alice"])
        folder = write_gradients(dv_dirs["acme"] / "grads")
        response = client.post(API + "/gradient-sets/", {"team": "acme", "name": "cnn", "path": str(folder)},
                               format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["steps"] == [0, 1, 2] and body["tensor_count"] == 9 and body["dtypes"] == {"F32": 6, "I64": 3}
        assert body["float_count"] == 3 * (32 * 24 + 24) and body["non_float_tensors"] == ["seen"]
        set_id = body["id"]

        for config in ({"id": "lmgc"}, {"id": "zstd", "level": 19}):
            response = client.post(API + "/jobs/", {"team": "acme", "kind": "compress", "gradient_set": set_id,
                                                    "codec_config": config}, format="json")
            assert response.status_code == 201, response.content
            assert response.json()["gradient_set_id"] == set_id
            events = collect_events(f"job-{response.json()['id']}")
            job = _run_latest("compress")
            assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
            if config["id"] == "lmgc":
                assert job.metrics["windows"] >= 6 and 0 < job.metrics["bits_per_float"] < 32
                stages = [e["job"]["stage"] for e in events.drain()]
                assert any("windows" in s and "bits/float" in s for s in stages), stages

        detail = client.get(API + f"/gradient-sets/{set_id}/").json()
        rates = detail["rates"]
        assert [r["codec_id"] for r in rates] == sorted([r["codec_id"] for r in rates],
                                                         key=lambda c: {r["codec_id"]: r["rate"] for r in rates}[c])
        assert {r["codec_id"] for r in rates} == {"lmgc", "zstd"}
        assert all(0 < r["rate"] < 1.2 and r["bits_per_float"] > 0 for r in rates)

        artifact = Artifact.objects.get(gradient_set_id=set_id, codec_id="lmgc")
        response = client.post(API + "/jobs/", {"team": "acme", "kind": "decompress", "artifact": artifact.pk},
                               format="json")
        assert response.status_code == 201, response.content
        job = _run_latest("decompress")
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        assert job.metrics["verification"]["status"] == "verified" and job.metrics["verification"]["checked"] == 3
        artifact.refresh_from_db()
        assert artifact.verification == Artifact.Verification.VERIFIED

    def test_upload_registers_safetensors_only(self, world, as_user, tmp_path):
        client = as_user(world["alice"])
        folder = write_gradients(tmp_path / "g", steps=2)
        files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]
        response = client.post(API + "/gradient-sets/upload/", {"team": "acme", "name": "up", "files": files},
                               format="multipart")
        assert response.status_code == 201, response.content
        assert response.json()["source"] == "upload" and response.json()["steps"] == [0, 1]
        bad = client.post(API + "/gradient-sets/upload/",
                          {"team": "acme", "name": "bad", "files": [SimpleUploadedFile("x.bin", b"\x80\x04")]},
                          format="multipart")
        assert bad.status_code == 400 and not GradientSet.objects.filter(name="bad").exists()

    def test_what_is_refused_at_submit(self, world, as_user, dv_dirs):
        client = as_user(world["alice"])
        folder = write_gradients(dv_dirs["acme"] / "grads", steps=1)
        set_id = client.post(API + "/gradient-sets/", {"team": "acme", "name": "g", "path": str(folder)},
                             format="json").json()["id"]
        not_lm = dv_dirs["acme"] / "not-lm"
        not_lm.mkdir()
        (not_lm / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
        write_gradients(not_lm / "weights", steps=1)  # a subfolder: the folder itself has no weights
        from webapp.registry.models import ModelEntry
        from webapp.teams.models import Team
        model = ModelEntry.objects.create(team=Team.objects.get(slug="acme"), name="bert", path=str(not_lm),
                                          layout="safetensors")
        for body, message in [
            ({"codec_config": {"id": "fmdelta"}}, "needs a base"),
            ({"codec_config": {"id": "lmgc", "prior": str(not_lm)}}, "from the registry"),
            ({"codec_config": {"id": "lmgc"}, "model": model.pk}, "not a causal language model"),
            ({"codec_config": {"id": "zstd"}, "model": model.pk}, "takes no prior"),
            ({"codec_config": {"id": "lmgc", "window_elements": 1}}, "window_elements"),
        ]:
            response = client.post(API + "/jobs/", {"team": "acme", "kind": "compress", "gradient_set": set_id,
                                                    **body}, format="json")
            assert response.status_code == 400 and message in response.json()["message"], response.content
        assert not Job.objects.exists()
        other = as_user(world["bob"]).get(API + f"/gradient-sets/{set_id}/")
        assert other.status_code == 404

    def test_endpoints_are_in_the_openapi_schema(self, world, api_client):
        schema = api_client.get("/api/schema/").content
        assert b"/api/v1/gradient-sets/" in schema and b"/api/v1/gradient-sets/{id}/" in schema
        assert b"gradient_set" in schema
