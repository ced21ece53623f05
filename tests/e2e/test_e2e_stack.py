"""End to end on the real parts: daphne, a Celery worker process, Redis (broker and channel layer), SQLite or
PostgreSQL, Chromium. No eager tasks, no in-memory layer."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import modelcodecs
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import PASSWORDS

JOB_TIMEOUT_MS = 120_000
FINAL = re.compile("^(succeeded|failed|cancelled)$")


def sha256_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def login(page, username: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def wait_connected(page) -> None:
    page.wait_for_function("window.deltavault && window.deltavault.connected === true")


def register_model(page, name: str, path: Path) -> None:
    page.goto("/models/")
    page.fill("#id_path-name", name)
    page.fill("#id_path-path", str(path))
    page.click("form:has(input[name=source][value=path]) button[type=submit]")
    expect(page.locator("h1")).to_have_text(name)


def api_wait(api, job_id: int, statuses=("succeeded", "failed", "cancelled"), timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = api.get(f"/api/v1/jobs/{job_id}/")
        assert status == 200, job
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def api_pair(api, stack, prefix: str, base: Path, ft: Path) -> int:
    status, b = api.post("/api/v1/models/", {"team": "acme", "name": f"{prefix}-base", "path": str(base)})
    assert status == 201, b
    status, f = api.post("/api/v1/models/", {"team": "acme", "name": f"{prefix}-ft", "path": str(ft)})
    assert status == 201, f
    status, pair = api.post("/api/v1/pairs/", {"team": "acme", "name": prefix, "base": b["id"], "finetuned": f["id"]})
    assert status == 201, pair
    return pair["id"]


def test_browser_compresses_a_pair_live_and_the_artifact_restores_the_finetune(
        stack, accounts, tiny_pair, context, screenshots, tmp_path):
    base_dir, ft_dir = tiny_pair
    page = context.new_page()
    login(page, "alice")

    # Register the two folders and the pair through the pages.
    register_model(page, "e2e-base", base_dir)
    register_model(page, "e2e-ft", ft_dir)
    page.goto("/pairs/")
    page.fill("#id_name", "e2e-pair")
    page.select_option("#id_base", label="e2e-base")
    page.select_option("#id_finetuned", label="e2e-ft")
    page.click("main form button[type=submit]")
    expect(page.locator("h1")).to_have_text("e2e-pair")
    pair_url = page.url

    # A second tab follows the team's live job list from before the job exists.
    board = context.new_page()
    board.goto("/jobs/")
    wait_connected(board)

    # Submit an FM-Delta job from the form.
    page.click("text=Compress with a codec")
    page.select_option("#id_kind", "compress")
    page.select_option("#id_codec", "fmdelta")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/jobs/*/")
    job_id = int(page.url.rstrip("/").split("/")[-1])

    # The board gets a row for the new job and sees it through to 100 % without a reload.
    row = board.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator("[data-field=status]")).to_have_text(FINAL, timeout=JOB_TIMEOUT_MS)
    if row.locator("[data-field=status]").inner_text() != "succeeded":
        page.reload()
        pytest.fail(f"job {job_id} did not succeed: {page.locator('[data-field=error]').inner_text()}")
    expect(row.locator(".pct")).to_have_text("100.0%")
    assert row.locator(".bar").evaluate("el => el.style.width") == "100%"
    seen = board.evaluate(f"window.deltavault.seen.filter(s => s[0] === {job_id}).map(s => [s[1], s[2]])")
    running = [p for p, status in seen if status == "running"]
    intermediate = sorted({p for p in running if 0 < p < 100})
    assert len(intermediate) >= 2, f"too few intermediate progress values: {seen}"
    assert running == sorted(running), f"progress went backwards: {seen}"
    assert seen[-1] == [100.0, "succeeded"]

    # The job page (opened right after submitting) reached 100 % too, live.
    expect(page.locator("[data-field=status]").first).to_have_text("succeeded", timeout=JOB_TIMEOUT_MS)
    expect(page.locator(".pct").first).to_have_text("100.0%")
    expect(page.locator("[data-field=artifact]")).to_be_visible()
    page.screenshot(path=str(screenshots / "job-page.png"), full_page=True)

    # The pair page shows the artifact with its ratio; download it.
    page.goto(pair_url)
    artifact_row = page.locator("table[data-comparison] tbody tr").first
    expect(artifact_row).to_contain_text("fmdelta")
    ratio_text = artifact_row.locator("[data-field=ratio]").inner_text()
    ratio = float(ratio_text.rstrip("×"))
    assert ratio > 1.0, ratio_text
    page.screenshot(path=str(screenshots / "pair-page.png"), full_page=True)
    with page.expect_download() as info:
        artifact_row.locator("a[data-download]").click()
    artifact_path = tmp_path / "downloaded.dvz"
    info.value.save_as(artifact_path)
    assert artifact_path.stat().st_size > 0

    # The downloaded artifact verifies against the base and restores the fine-tune byte for byte.
    report = modelcodecs.verify_artifact(artifact_path, base_dir=base_dir, reference_dir=ft_dir).as_dict()
    assert report["ok"], report
    restored = tmp_path / "restored"
    modelcodecs.decompress_model(artifact_path, restored, base_dir=base_dir)
    assert sha256_tree(restored) == sha256_tree(ft_dir)
    total = sum(p.stat().st_size for p in ft_dir.iterdir())
    assert abs(total / artifact_path.stat().st_size - ratio) < 0.01


def test_rest_token_submit_and_poll(stack, accounts, api_alice, tiny_pair):
    status, body = api_alice.call("POST", "/api/v1/auth/token/", None)  # a token is not a password: refused
    assert status in (400, 401, 403)
    import json
    import urllib.request

    request = urllib.request.Request(stack.base_url + "/api/v1/auth/token/", method="POST",
                                     data=json.dumps({"username": "alice", "password": PASSWORDS["alice"]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.loads(response.read())["token"]
    assert token == accounts["alice"]["token"]

    pair_id = api_pair(api_alice, stack, "rest-pair", *tiny_pair)
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "zstd"}})
    assert status == 201, job
    assert job["status"] == "queued"
    final = api_wait(api_alice, job["id"])
    assert final["status"] == "succeeded", final
    assert final["progress"] == 100.0 and final["artifact_id"]
    status, artifact = api_alice.get(f"/api/v1/artifacts/{final['artifact_id']}/")
    assert status == 200 and artifact["ratio"] > 1.0 and artifact["codec_id"] == "zstd"


WS_COLLECT = """([path]) => new Promise((resolve) => {
  const out = {opened: false, messages: [], closed: null};
  const ws = new WebSocket(`ws://${location.host}${path}`);
  window.__ws = ws; window.__out = out;
  ws.onopen = () => { out.opened = true; resolve(out); };
  ws.onmessage = (e) => out.messages.push(JSON.parse(e.data));
  ws.onclose = (e) => { out.closed = e.code; resolve(out); };
})"""


def test_websocket_client_receives_updates_from_the_worker(stack, accounts, api_alice, tiny_pair, context):
    page = context.new_page()
    page.goto("/login/")   # any page of the site: the socket's Origin must be an allowed host
    token = accounts["alice"]["token"]
    state = page.evaluate(WS_COLLECT, [f"/ws/teams/acme/jobs/?token={token}"])
    assert state["opened"], state
    page.wait_for_function("window.__out.messages.length >= 1")
    assert page.evaluate("window.__out.messages[0].type") == "jobs.state"

    pair_id = api_pair(api_alice, stack, "ws-pair", *tiny_pair)
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "fmdelta"}})
    assert status == 201, job
    page.wait_for_function(
        f"window.__out.messages.some(m => m.type === 'job.update' && m.job.id === {job['id']} "
        f"&& m.job.status === 'succeeded')", timeout=JOB_TIMEOUT_MS)
    updates = [m["job"] for m in page.evaluate("window.__out.messages")
               if m["type"] == "job.update" and m["job"]["id"] == job["id"]]
    statuses = [u["status"] for u in updates]
    assert "running" in statuses and statuses[-1] == "succeeded", statuses
    assert updates[-1]["artifact_id"] is not None and updates[-1]["team"] == "acme"
    assert any(0 < u["progress"] < 100 for u in updates), [u["progress"] for u in updates]


def test_cross_team_websockets_are_refused(stack, accounts, api_alice, context):
    page = context.new_page()
    page.goto("/login/")
    bob = accounts["bob"]["token"]
    # Refused after the handshake with a close code (so a browser knows not to retry), never with data.
    page.evaluate(WS_COLLECT, [f"/ws/teams/acme/jobs/?token={bob}"])
    state = page.wait_for_function("window.__out.closed !== null && window.__out").json_value()
    assert state["closed"] == 4404 and state["messages"] == [], state
    status, jobs = api_alice.get("/api/v1/jobs/?team=acme")
    assert status == 200
    if jobs["results"]:
        job_id = jobs["results"][0]["id"]
        page.evaluate(WS_COLLECT, [f"/ws/jobs/{job_id}/?token={bob}"])
        state = page.wait_for_function("window.__out.closed !== null && window.__out").json_value()
        assert state["closed"] == 4404 and state["messages"] == [], state
    # Anonymous (no cookie, no token) is refused as well; bob's own team works.
    page.evaluate(WS_COLLECT, ["/ws/teams/acme/jobs/"])
    assert page.wait_for_function("window.__out.closed").json_value() == 4401
    assert page.evaluate(WS_COLLECT, [f"/ws/teams/other/jobs/?token={bob}"])["opened"]


def test_cancel_takes_effect_within_seconds(stack, accounts, api_alice, big_pair):
    pair_id = api_pair(api_alice, stack, "cancel-pair", *big_pair)
    artifacts_dir = stack.home / "artifacts"
    before = {p for p in artifacts_dir.rglob("*") if p.is_file()} if artifacts_dir.exists() else set()
    # A slow codec config keeps the job running long enough to cancel it mid-way: zstd at its highest level.
    status, codecs = api_alice.get("/api/v1/codecs/")
    assert status == 200, codecs
    zstd = next(c for c in codecs if c["id"] == "zstd")
    config = {"id": "zstd"}
    level = zstd["config_schema"]["properties"].get("level")
    if level is not None:
        config["level"] = int(level.get("maximum", 19))
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": config, "options": {"threads": 1}})
    assert status == 201, job
    running = api_wait(api_alice, job["id"], statuses=("running", "succeeded", "failed"), timeout=60)
    assert running["status"] == "running", running
    deadline = time.monotonic() + 30
    while api_alice.get(f"/api/v1/jobs/{job['id']}/")[1]["progress"] <= 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    asked = time.monotonic()
    status, body = api_alice.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert status == 200, body
    final = api_wait(api_alice, job["id"], timeout=30)
    took = time.monotonic() - asked
    assert final["status"] == "cancelled", final
    assert final["artifact_id"] is None
    assert took < 5.0, f"cancel took {took:.1f} s"
    # Nothing partial is left in the artifacts storage.
    after = {p for p in artifacts_dir.rglob("*") if p.is_file()} if artifacts_dir.exists() else set()
    assert after == before


def test_evaluate_job_of_a_lossy_artifact_through_rest_streams_partial_scores(stack, accounts, api_alice, context):
    """A real tiny Llama pair: rtn-8 artifact, then an evaluate job over REST; the socket sees the job run with
    partial scores, and the result (original -> restored) reaches the artifact and the pair comparison."""
    from modelcodecs.synthetic import make_tiny_transformer_pair

    tiny = make_tiny_transformer_pair(stack.models_root / "acme" / "e2e-llm",  # the team's own folder
                                      steps=2, base_steps=2, n_layer=1, d_model=16,
                                      vocab_size=300, seq_len=32, batch_size=2)
    pair_id = api_pair(api_alice, stack, "eval-pair", tiny.base, tiny.finetuned)
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "rtn", "bits": 8}})
    assert status == 201, job
    artifact_id = api_wait(api_alice, job["id"])["artifact_id"]
    status, dataset = api_alice.post("/api/v1/datasets/", {"team": "acme", "name": "eval-text",
                                                           "path": str(tiny.dataset)})
    assert status == 201 and dataset["kind"] == "text", dataset

    page = context.new_page()
    page.goto("/login/")
    state = page.evaluate(WS_COLLECT, [f"/ws/teams/acme/jobs/?token={accounts['alice']['token']}"])
    assert state["opened"], state
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "evaluate", "artifact": artifact_id,
                                                   "dataset": dataset["id"], "options": {"max_tokens": 512}})
    assert status == 201, job
    done = api_wait(api_alice, job["id"], timeout=600)  # the worker loads torch and scores two models
    assert done["status"] == "succeeded", done
    # while it ran, the socket carried its progress and its running scores
    messages = page.evaluate("window.__out.messages")
    updates = [m["job"] for m in messages if m["type"] == "job.update" and m["job"]["id"] == job["id"]]
    assert updates, ([(m["type"], m.get("job", {}).get("id"), m.get("job", {}).get("status")) for m in messages],
                     page.evaluate("window.__out.closed"))
    partial = [u["metrics"]["partial"] for u in updates if u["status"] == "running" and "partial" in u["metrics"]]
    assert partial and "original" in partial[0] and "perplexity" in partial[0]["original"], partial
    assert any(0 < u["progress"] < 100 for u in updates), [u["progress"] for u in updates]
    final = done["metrics"]
    assert final["original"]["perplexity"] > 1 and final["restored"]["perplexity"] > 1
    assert final["delta"]["perplexity"] == pytest.approx(final["restored"]["perplexity"]
                                                         - final["original"]["perplexity"])
    status, comparison = api_alice.get(f"/api/v1/pairs/{pair_id}/comparison/")
    assert status == 200 and comparison["metric"] == "perplexity", comparison
    row = next(r for r in comparison["rows"] if r["artifact_id"] == artifact_id)
    assert row["codec"] == "rtn" and row["changes"][0]["metric"] == "perplexity"
    assert 8 <= row["bits_per_weight"] < 40  # int-8 weights, 1-D tensors kept lossless, configs and tokenizer


def write_gradient_set(folder: Path, steps: int = 3) -> Path:
    """Gradient-like tensors (heavy-tailed, a quarter exact zeros), one safetensors file per step."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for step in range(steps):
        weight = (rng.standard_t(4, (512, 512)) * 1e-3).astype(np.float32)
        weight[rng.random(512) < 0.25] = 0.0
        save_file({"fc.weight": weight, "fc.bias": (rng.standard_normal(512) * 1e-2).astype(np.float32)},
                  str(folder / f"step_{step:08d}.safetensors"), metadata={"step": str(step)})
    return folder


def test_gradient_set_compresses_with_lmgc_live_over_websocket_and_restores(stack, accounts, api_alice, context):
    folder = write_gradient_set(stack.models_root / "acme" / "e2e-gradients")
    status, entry = api_alice.post("/api/v1/gradient-sets/", {"team": "acme", "name": "e2e-grads",
                                                               "path": str(folder)})
    assert status == 201, entry
    assert entry["steps"] == [0, 1, 2] and entry["float_count"] == 3 * (512 * 512 + 512)
    page = context.new_page()
    page.goto("/login/")
    token = accounts["alice"]["token"]
    assert page.evaluate(WS_COLLECT, [f"/ws/teams/acme/jobs/?token={token}"])["opened"]
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "gradient_set": entry["id"],
                                                   "codec_config": {"id": "lmgc", "window_elements": 16384}})
    assert status == 201, job
    page.wait_for_function(
        f"window.__out.messages.some(m => m.type === 'job.update' && m.job.id === {job['id']} "
        f"&& m.job.status === 'succeeded')", timeout=JOB_TIMEOUT_MS)
    updates = [m["job"] for m in page.evaluate("window.__out.messages")
               if m["type"] == "job.update" and m["job"]["id"] == job["id"]]
    assert any("windows" in u["stage"] and "bits/float" in u["stage"] for u in updates), [u["stage"] for u in updates]
    final = updates[-1]
    assert final["metrics"]["windows"] == 3 * 17 and 0 < final["metrics"]["bits_per_float"] < 32
    status, detail = api_alice.get(f"/api/v1/gradient-sets/{entry['id']}/")
    assert status == 200 and [r["codec_id"] for r in detail["rates"]] == ["lmgc"]

    status, restore = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "decompress",
                                                       "artifact": final["artifact_id"]})
    assert status == 201, restore
    restored = api_wait(api_alice, restore["id"])
    assert restored["status"] == "succeeded", restored
    assert restored["metrics"]["verification"]["status"] == "verified"
    assert sha256_tree(Path(restored["metrics"]["output_dir"])) == sha256_tree(folder)
