"""Issue 11 in the browser, on the real stack: live metrics while a job runs and a confirmed cancel; the jobs page's
filters and search; labelled metrics; a repeat refused at submit; a model changed on disk failing its job and a
rescan from its page; a delete page listing the artifacts that go with a base; a confirmed job delete; the
favicon."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.e2e.conftest import write_pair
from tests.e2e.test_e2e_stack import JOB_TIMEOUT_MS, api_pair, api_wait, login


def test_live_metrics_and_a_confirmed_cancel(stack, accounts, api_alice, big_pair, context):
    pair_id = api_pair(api_alice, stack, "metrics-pair", *big_pair)
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "zstd", "level": 19},
                                                   "options": {"threads": 1}})
    assert status == 201, job
    page = context.new_page()
    login(page, "alice")
    page.goto(f"/jobs/{job['id']}/")
    # While it runs, the Metrics panel shows elapsed time, throughput and the time left, with units.
    metrics = page.locator("[data-field=metrics]")
    expect(metrics).to_contain_text("elapsed", timeout=60_000)
    expect(metrics).to_contain_text("estimated time left", timeout=30_000)
    expect(metrics).to_contain_text(re.compile(r"\d MB/s"))
    assert page.locator("[data-field=status]").first.inner_text() == "running"

    # Cancel asks first: dismissed, nothing happens; accepted, the job stops.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("[data-action=cancel]")
    assert api_alice.get(f"/api/v1/jobs/{job['id']}/")[1]["cancel_requested"] is False
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-action=cancel]")
    expect(page.locator("[data-field=status]").first).to_have_text("cancelled", timeout=30_000)


def test_find_trust_and_clean_up(stack, accounts, api_alice, context, screenshots):
    base_dir, ft_dir = write_pair(stack.models_root / "acme" / "e2e-clean", tensors=4, rows=64, cols=128, seed=7)
    pair_id = api_pair(api_alice, stack, "clean", base_dir, ft_dir)
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "xor-zstd"}})
    assert status == 201, job
    done = api_wait(api_alice, job["id"])
    assert done["status"] == "succeeded", done
    assert done["metrics"]["peak_rss_bytes"] > 0  # raw in REST

    page = context.new_page()
    login(page, "alice")
    # The jobs page: filter by codec and pair, search; pair column.
    page.goto("/jobs/")
    page.select_option("select[name=codec]", "xor-zstd")
    page.select_option("select[name=pair]", label="clean")
    page.click("form[data-job-filters] button[type=submit]")
    rows = page.locator("table[data-jobs] tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", str(job["id"]))
    expect(rows.first.locator("[data-field=pair]")).to_have_text("clean")
    page.screenshot(path=str(screenshots / "jobs-filtered.png"), full_page=True)
    page.fill("input[name=q]", "no-such-thing-anywhere")
    page.click("form[data-job-filters] button[type=submit]")
    expect(page.locator("[data-no-jobs]")).to_be_visible()

    # Labelled metrics on the job page.
    page.goto(f"/jobs/{job['id']}/")
    metrics = page.locator("[data-field=metrics]")
    expect(metrics).to_contain_text("peak memory (RSS) during the job")
    expect(metrics).to_contain_text("throughput (MB/s)")

    # The same codec config again is refused at submit, naming the artifact with its options.
    page.goto(f"/jobs/new/?kind=compress&pair={pair_id}&codec=xor-zstd")
    page.click("main form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text(
        re.compile(rf"xor-zstd \(chunk_bytes=\d+, level=1\) artifact #{done['artifact_id']} of pair clean"))

    # A fine-tune changed on disk: its model page says so, a job on it fails clearly, a rescan fixes the record.
    status, pair = api_alice.get(f"/api/v1/pairs/{pair_id}/")
    ft_id = pair["finetuned"]["id"]
    with open(ft_dir / "model.safetensors", "ab") as fh:
        fh.write(b" " * 8)
    status, failing = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                       "codec_config": {"id": "zstd"}})
    assert status == 201, failing
    failed = api_wait(api_alice, failing["id"])
    assert failed["status"] == "failed" and "changed on disk" in failed["error"], failed
    page.goto(f"/models/{ft_id}/")
    expect(page.locator("[data-model-changed]")).to_contain_text("model.safetensors")
    page.screenshot(path=str(screenshots / "model-changed.png"), full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-action=rescan]")
    expect(page.locator(".messages")).to_contain_text("rescanned")
    expect(page.locator("[data-model-changed]")).to_have_count(0)

    # A finished job is deleted after a confirmation; its artifact stays.
    page.goto(f"/jobs/{failing['id']}/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-action=delete]")
    page.wait_for_url("**/jobs/")
    assert api_alice.get(f"/api/v1/jobs/{failing['id']}/")[0] == 404

    # Deleting the base lists the artifact that needs it; it goes only together with it.
    page.goto(f"/models/{pair['base']['id']}/")
    page.click("[data-action=delete]")
    expect(page.locator("[data-impact-artifacts]")).to_contain_text(f"artifact #{done['artifact_id']} of pair clean")
    expect(page.locator("[data-impact-pairs]")).to_contain_text("clean")
    page.screenshot(path=str(screenshots / "model-delete.png"), full_page=True)
    page.check("input[name=with_artifacts]")
    page.click("[data-action=confirm-delete]")
    expect(page.locator(".messages")).to_contain_text("Deleted model clean-base")
    assert api_alice.get(f"/api/v1/artifacts/{done['artifact_id']}/")[0] == 404
    assert not list((stack.home / "artifacts").rglob(f"job-{job['id']}-*"))

    # The favicon is there.
    response = page.request.get("/favicon.ico")
    assert response.ok and "svg" in response.headers["content-type"]
