"""Faults on the real stack (tests/e2e/stack.py runs heartbeats and sweeps every fraction of a second):

- a worker killed with SIGKILL mid-job: the job is failed by the sweep of the next worker, its partial files are
  removed, and Retry runs it to the end;
- a Redis restart (no persistence) with a job waiting: the job is sent again and finishes;
- the workers list (REST) and a job on a queue no live worker serves;
- WebSocket refusals are close codes, and the dashboard stops retrying after one.
"""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.e2e.conftest import Api
from tests.e2e.test_e2e_stack import api_pair, api_wait, login, wait_connected

# zstd at level 19 on one thread keeps a 32 MB job running for seconds: long enough to kill it mid-way.
ZSTD_SLOW = {"id": "zstd", "level": 19}


def _wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout} s")


def _live_workers(api: Api) -> list[dict]:
    status, workers = api.get("/api/v1/workers/")
    assert status == 200, workers
    return workers


def test_a_worker_killed_mid_job_fails_the_job_and_retry_runs_it(stack, api_alice, tiny_pair):
    pair_id = api_pair(api_alice, stack, "kill-pair", *tiny_pair)
    first = _wait(lambda: _live_workers(api_alice), 30, "a live worker")[0]
    assert first["queues"] == ["cpu", "gpu"] and first["device"]["cpu_cores"] >= 1

    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": ZSTD_SLOW, "options": {"threads": 1},
                                                   "queue": "cpu"})
    assert status == 201, job
    running = _wait(lambda: (lambda j: j if j["status"] == "running" and j["progress"] > 0 else None)(
        api_alice.get(f"/api/v1/jobs/{job['id']}/")[1]), 60, "the job running")
    assert running["worker"] == first["name"]
    scratch = stack.home / "tmp" / f"job-{job['id']}"
    assert scratch.is_dir() and any(scratch.iterdir()), "the job writes its partial artifact there"
    assert job["id"] in [j["id"] for w in _live_workers(api_alice) for j in w["current_jobs"]]

    stack.kill("worker")                          # main process and pool child, SIGKILL: no hook runs
    time.sleep(1.0)
    assert api_alice.get(f"/api/v1/jobs/{job['id']}/")[1]["status"] == "running"

    killed_at = time.monotonic()
    stack.start_worker()
    failed = api_wait(api_alice, job["id"], statuses=("failed",), timeout=60)
    took = time.monotonic() - killed_at
    assert first["name"] in failed["error"] and "stopped" in failed["error"], failed["error"]
    assert not scratch.exists(), "the partial files are removed"
    assert took < 60, f"the sweep took {took:.1f} s"
    assert first["name"] not in [w["name"] for w in _live_workers(api_alice)]

    status, again = api_alice.post(f"/api/v1/jobs/{job['id']}/retry/")
    assert status == 201, again
    final = api_wait(api_alice, again["id"], timeout=300)
    assert final["status"] == "succeeded", final
    assert final["worker"] != first["name"] and final["retry_of_id"] == job["id"]


def test_a_redis_restart_loses_no_waiting_job(stack, api_alice, tiny_pair):
    pair_id = api_pair(api_alice, stack, "redis-restart-pair", *tiny_pair)
    stack.stop("worker")                          # jobs wait in the broker
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "zstd"}, "queue": "cpu"})
    assert status == 201, job
    assert "No live worker serves the cpu queue" in job["queue_warning"]
    stack.stop("redis")                           # no persistence: the message is gone
    stack.start_redis()
    stack.start_worker()                          # reconciles at start
    final = api_wait(api_alice, job["id"], timeout=60)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 1


def test_websocket_refusals_are_close_codes_and_the_dashboard_stops(stack, accounts, api_alice, context):
    status, jobs = api_alice.get("/api/v1/jobs/?team=acme")
    assert status == 200 and jobs["results"], "an earlier test made a job"
    job_id = jobs["results"][0]["id"]
    page = context.new_page()
    page.goto("/login/")
    bob = accounts["bob"]["token"]
    refusal = """([path]) => new Promise((resolve) => {
      const ws = new WebSocket(`ws://${location.host}${path}`); const messages = [];
      ws.onmessage = (e) => messages.push(e.data);
      ws.onclose = (e) => resolve({code: e.code, messages}); })"""
    for path, code in ((f"/ws/jobs/{job_id}/?token={bob}", 4404), ("/ws/jobs/-1/", 4404),
                       (f"/ws/jobs/-1/?token={bob}", 4404), (f"/ws/teams/..%2Facme/jobs/?token={bob}", 4404),
                       ("/ws/teams/acme/jobs/?token=revoked", 4401)):
        assert page.evaluate(refusal, [path]) == {"code": code, "messages": []}, path

    # Bob, added to acme, follows an acme job page; removed from the team, his page is closed with 4403 and
    # live.js does not reconnect.
    stack.python("from django.contrib.auth.models import User; from webapp.teams.models import Team;"
                 "from webapp.teams.services import membership_add;"
                 "membership_add(team=Team.objects.get(slug='acme'), user=User.objects.get(username='bob'))")
    bob_page = context.browser.new_context(base_url=stack.base_url).new_page()
    login(bob_page, "bob")
    bob_page.goto(f"/jobs/{job_id}/")
    wait_connected(bob_page)
    # An earlier test restarted Redis: daphne's first use of a dead pooled connection may drop a socket (1006) and
    # live.js reconnects, as it should. What is checked here is what happens after the removal.
    bob_page.evaluate("window.deltavault.reconnects = 0")
    stack.python("from django.contrib.auth.models import User; from webapp.teams.models import Team;"
                 "from webapp.teams.services import membership_remove;"
                 "membership_remove(team=Team.objects.get(slug='acme'), user=User.objects.get(username='bob'))")
    bob_page.wait_for_function("window.deltavault.refused === 4403", timeout=10_000)
    time.sleep(1.5)
    assert bob_page.evaluate("window.deltavault.reconnects || 0") == 0, bob_page.evaluate("window.deltavault.closeCodes")
    assert bob_page.evaluate("window.deltavault.connected") is False
    bob_page.context.close()


def test_workers_page_and_the_flag_of_a_queue_no_worker_serves(stack, api_alice, tiny_pair, context):
    worker = _wait(lambda: _live_workers(api_alice), 30, "a live worker")[0]
    page = context.new_page()
    login(page, "alice")
    page.click("nav >> text=Workers")
    row = page.locator(f'tr[data-worker="{worker["name"]}"]')
    expect(row.locator("[data-field=queues]")).to_have_text("cpu, gpu")
    expect(row.locator("[data-field=device]")).to_contain_text("CPU cores")
    # Only the cpu queue is served now: the form says so and so does the job's page.
    stack.stop("worker")
    stack.start_worker(queues="cpu")
    _wait(lambda: [w for w in _live_workers(api_alice) if w["queues"] == ["cpu"]], 30, "the cpu-only worker")
    page.goto("/jobs/new/")
    expect(page.locator("#id_queue option[value=gpu]")).to_have_text("GPU worker (no live worker)")
    pair_id = api_pair(api_alice, stack, "flag-pair", *tiny_pair)
    status, job = api_alice.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                   "codec_config": {"id": "zstd"}, "queue": "gpu"})
    assert status == 201 and "No live worker serves the gpu queue" in job["queue_warning"], job
    page.goto(f"/jobs/{job['id']}/")
    expect(page.locator("[data-field=queue_warning]")).to_contain_text("No live worker serves the gpu queue")
    api_alice.post(f"/api/v1/jobs/{job['id']}/cancel/")
    stack.stop("worker")
    stack.start_worker()
