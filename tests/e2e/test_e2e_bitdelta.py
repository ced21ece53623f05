"""BitDelta end to end: a compress job submitted over REST distils on a real worker, and every step's loss reaches
a WebSocket client and the REST job; the artifact restores to a folder transformers loads."""

from __future__ import annotations

import pytest

from tests.e2e.test_e2e_stack import JOB_TIMEOUT_MS, api_pair, api_wait

STEPS = 12
WS_FOLLOW = """([path]) => new Promise((resolve) => {
  const out = {messages: [], opened: 0};
  window.__out = out;
  (function open() {
    const ws = new WebSocket(`ws://${location.host}${path}`);
    ws.onopen = () => { out.opened += 1; resolve(out); };
    ws.onmessage = (e) => out.messages.push(JSON.parse(e.data));
    ws.onclose = () => { if (!out.messages.some(m => m.job && m.job.status === "succeeded")) setTimeout(open, 200); };
  })();
})"""


@pytest.fixture(scope="session")
def tiny_lm(stack):
    """A tiny Llama pair with a tokenizer, and calibration text (modelcodecs.synthetic)."""
    pytest.importorskip("transformers")
    from modelcodecs import synthetic

    root = stack.models_root / "acme" / "e2e-bitdelta"
    pair = synthetic.make_tiny_transformer_pair(root, steps=2, base_steps=0, d_model=16, n_layer=1, seed=3)
    text = synthetic.write_text_dataset(root / "calibration.txt", n_lines=300, seed=4, domain="chat")
    return pair.base, pair.finetuned, text


def test_bitdelta_job_streams_its_loss_over_the_websocket_and_rest(stack, accounts, api_alice, tiny_lm, context):
    base, ft, text = tiny_lm
    pair_id = api_pair(api_alice, stack, "bitdelta-pair", base, ft)
    status, dataset = api_alice.post("/api/v1/datasets/", {"team": "acme", "name": "bd-calib", "path": str(text)})
    assert status == 201, dataset
    config = {"id": "bitdelta", "steps": STEPS, "batch_size": 2, "seq_len": 16, "device": "cpu"}
    # too little text for the steps asked: refused at submit, no job
    status, body = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                    "dataset": dataset["id"],
                                                    "codec_config": {**config, "steps": 100_000}})
    assert status == 400 and "tokens" in body["message"], body

    page = context.new_page()
    page.goto("/login/")
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "dataset": dataset["id"], "codec_config": config})
    assert status == 201, job
    # the job's socket; like the job page, it reconnects if the server drops it (a loaded machine can time out
    # the channel layer's Redis reads) and then first gets the job's current state again
    page.evaluate(WS_FOLLOW, [f"/ws/jobs/{job['id']}/?token={accounts['alice']['token']}"])
    # the worker imports torch and transformers for this job: allow for a loaded machine
    final = api_wait(api_alice, job["id"], timeout=600)
    assert final["status"] == "succeeded", (final["error"], stack.log_tails())
    page.wait_for_function("window.__out.messages.some(m => m.job && m.job.status === 'succeeded')",
                           timeout=JOB_TIMEOUT_MS)
    curve = final["metrics"]["training_loss"]
    assert [step for step, _ in curve] == list(range(1, STEPS + 1))
    assert final["metrics"]["prepared"]["initial_loss"] == curve[0][1]
    messages = page.evaluate("window.__out.messages")
    running = [len(m["job"]["metrics"].get("training_loss", [])) for m in messages
               if m.get("job") and m["job"]["status"] == "running"]
    # the curve arrived over the socket while the job ran, growing, before the job finished
    assert any(0 < n for n in running), [(m["type"], m.get("job", {}).get("status")) for m in messages]
    assert running == sorted(running), running
    done = next(m["job"] for m in messages if m.get("job") and m["job"]["status"] == "succeeded")
    assert done["metrics"]["training_loss"] == curve

    status, artifact = api_alice.get(f"/api/v1/artifacts/{final['artifact_id']}/")
    assert status == 200 and artifact["codec_id"] == "bitdelta" and artifact["ratio"] > 1
