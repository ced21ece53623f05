"""Store compressed end to end (issue 13 §4, §6): a model registered over REST with ``store_compressed`` is stored
by a real worker, its progress (tensors and bytes) reaching a WebSocket client; a fine-tune sharing its frozen
layers writes only what is new; once the folders are gone, a compress job of the pair restores both on demand."""

from __future__ import annotations

import shutil

from tests.e2e.conftest import write_pair
from tests.e2e.test_e2e_stack import JOB_TIMEOUT_MS, WS_COLLECT, api_wait


def test_store_compressed_registration_streams_progress_and_models_restore_on_demand(stack, accounts, api_alice,
                                                                                     context):
    base_dir, ft_dir = write_pair(stack.models_root / "acme" / "e2e-store", tensors=16, rows=512, cols=1024, seed=7)
    page = context.new_page()
    page.goto("/login/")
    assert page.evaluate(WS_COLLECT, [f"/ws/teams/acme/jobs/?token={accounts['alice']['token']}"])["opened"]

    status, base = api_alice.post("/api/v1/models/", {"team": "acme", "name": "stored-base", "path": str(base_dir),
                                                      "store_compressed": True})
    assert status == 201, base
    status, jobs = api_alice.get(f"/api/v1/jobs/?model={base['id']}&kind=store")
    assert status == 200 and len(jobs["results"]) == 1, jobs
    job_id = jobs["results"][0]["id"]
    page.wait_for_function(
        f"window.__out.messages.some(m => m.type === 'job.update' && m.job.id === {job_id} "
        f"&& m.job.status === 'succeeded')", timeout=JOB_TIMEOUT_MS)
    updates = [m["job"] for m in page.evaluate("window.__out.messages")
               if m["type"] == "job.update" and m["job"]["id"] == job_id]
    live = [u["metrics"]["partial"]["store"] for u in updates
            if u["status"] == "running" and "store" in u["metrics"].get("partial", {})]
    assert live and live[0]["tensors_total"] == 17, live  # 16 layers and the norm
    assert any(0 < u["progress"] < 100 for u in updates), [u["progress"] for u in updates]
    final = updates[-1]["metrics"]
    assert final["logical_bytes"] == base["total_bytes"] and 0 < final["written_bytes"] < final["logical_bytes"]

    status, ft = api_alice.post("/api/v1/models/", {"team": "acme", "name": "stored-ft", "path": str(ft_dir)})
    assert status == 201, ft
    status, job = api_alice.post(f"/api/v1/models/{ft['id']}/store/")
    assert status == 201 and job["kind"] == "store", job
    done = api_wait(api_alice, job["id"])
    assert done["status"] == "succeeded", done
    # every 4th layer, the norm, the config (and here the header) are the base's: stored once
    assert done["metrics"]["deduplicated_bytes"] >= 4 * 512 * 1024 * 4
    status, detail = api_alice.get(f"/api/v1/models/{ft['id']}/")
    assert status == 200 and detail["storage"] == "compressed"
    assert 0 < detail["unique_stored_bytes"] < detail["stored_bytes"]

    shutil.rmtree(base_dir)
    shutil.rmtree(ft_dir)
    status, pair = api_alice.post("/api/v1/pairs/", {"team": "acme", "name": "stored-pair", "base": base["id"],
                                                     "finetuned": ft["id"]})
    assert status == 201, pair
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair["id"],
                                                   "codec_config": {"id": "fmdelta"}})
    assert status == 201, job
    done = api_wait(api_alice, job["id"])
    assert done["status"] == "succeeded", done
    status, restore = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "decompress",
                                                       "artifact": done["artifact_id"]})
    assert status == 201, restore
    restored = api_wait(api_alice, restore["id"])
    assert restored["status"] == "succeeded" and restored["metrics"]["verification"]["status"] == "verified"
