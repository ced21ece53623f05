"""Issue 13 in the platform, on the real stack: a model registered through REST with ``store_compressed: true``
is stored by a real worker while the browser watches the job's progress arrive over the WebSocket, and the team's
Storage page (and ``GET /api/v1/storage/``) then shows its bytes on disk below its logical bytes. A second copy of
the same checkpoint, stored with the page's confirmed "Store compressed" button, writes nothing new: the two
models then split the shared objects evenly."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.conftest import write_pair
from tests.e2e.test_e2e_stack import FINAL, JOB_TIMEOUT_MS, login, wait_connected


def test_store_compressed_through_rest_with_live_progress_and_the_storage_page(
        stack, accounts, api_alice, context, screenshots):
    # fp32 weights of a trained-looking scale: their exponents are few, so the bit-field coder makes them smaller
    base_dir, _ = write_pair(stack.models_root / "acme" / "e2e-storage-page", tensors=16, rows=512, cols=1024,
                             seed=13)

    # The team's live job board is open before the job exists.
    page = context.new_page()
    login(page, "alice")
    page.goto("/jobs/")
    wait_connected(page)

    status, model = api_alice.post("/api/v1/models/", {"team": "acme", "name": "e2e-stored", "path": str(base_dir),
                                                       "store_compressed": True})
    assert status == 201, model
    status, jobs = api_alice.get(f"/api/v1/jobs/?kind=store&model={model['id']}")
    assert status == 200 and jobs["count"] == 1, jobs
    job_id = jobs["results"][0]["id"]

    # Progress arrives live, in order, through to success.
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator("[data-field=status]")).to_have_text(FINAL, timeout=JOB_TIMEOUT_MS)
    status, job = api_alice.get(f"/api/v1/jobs/{job_id}/")
    assert job["status"] == "succeeded", job
    seen = page.evaluate(f"window.deltavault.seen.filter(s => s[0] === {job_id}).map(s => [s[1], s[2]])")
    running = [p for p, state in seen if state == "running"]
    assert any(0 < p < 100 for p in running), f"no intermediate progress: {seen}"
    assert running == sorted(running), f"progress went backwards: {seen}"
    assert seen[-1] == [100.0, "succeeded"]

    # The Storage page: the model is stored compressed, with fewer bytes on disk than it stands for.
    page.goto("/storage/")
    stored = page.locator(f'#storage-models tr[data-model-id="{model["id"]}"]')
    expect(stored).to_have_attribute("data-storage", "compressed")
    logical, on_disk = int(stored.get_attribute("data-logical")), int(stored.get_attribute("data-on-disk"))
    assert 0 < on_disk < logical, (on_disk, logical)
    expect(page.locator("#chart-space svg")).to_be_visible()
    page.screenshot(path=str(screenshots / "storage-page.png"), full_page=True)

    status, breakdown = api_alice.get("/api/v1/storage/?team=acme")
    assert status == 200
    (row_,) = [m for m in breakdown["models"] if m["id"] == model["id"]]
    assert (row_["logical_bytes"], row_["on_disk_bytes"]) == (logical, on_disk)
    assert row_["storage"] == "compressed" and row_["saved_bytes"] == logical - on_disk

    # The same checkpoint registered again, stored from the page's button (it asks first).
    status, copy = api_alice.post("/api/v1/models/", {"team": "acme", "name": "e2e-stored-again",
                                                      "path": str(base_dir)})
    assert status == 201, copy
    rows = {model["id"]: f'#storage-models tr[data-model-id="{model["id"]}"]',
            copy["id"]: f'#storage-models tr[data-model-id="{copy["id"]}"]'}
    page.goto("/storage/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{rows[copy['id']]} [data-action=store]")
    page.wait_for_url("**/jobs/*/")
    expect(page.locator("[data-field=status]").first).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)

    # Nothing new was written: both models reference the same objects and carry half of them each.
    page.goto("/storage/")
    expect(page.locator(rows[copy["id"]])).to_have_attribute("data-storage", "compressed")
    page.screenshot(path=str(screenshots / "storage-page-shared.png"), full_page=True)
    halves = [int(page.locator(rows[key]).get_attribute("data-on-disk")) for key in (model["id"], copy["id"])]
    status, after = api_alice.get("/api/v1/storage/?team=acme")
    both = {m["id"]: m for m in after["models"] if m["id"] in rows}
    assert sum(halves) == on_disk and [both[k]["on_disk_bytes"] for k in rows] == halves
    assert all(m["own_bytes"] == 0 and m["shared_tensors"] == m["tensors"] for m in both.values()), both
    assert 0 <= halves[0] - halves[1] <= both[model["id"]]["tensors"]   # whole bytes; the odd ones to the first
