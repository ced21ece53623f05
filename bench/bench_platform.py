"""Platform latency and throughput on the real stack (daphne, a Celery prefork worker, Redis, Chromium).

Measures:
  1. submit -> worker start: REST POST /api/v1/jobs/ until the worker marks the job running (``started_at``),
     median over N jobs submitted one at a time to an idle worker (target < 250 ms);
  2. progress publish -> browser: ``webapp.jobs.reporter.job_progress_publish`` (the function the worker's progress
     reporter calls) from another process, through the Redis channel layer and daphne, to a WebSocket in Chromium
     (target < 500 ms); also how many live updates a browser saw for a real job;
  3. burst: 100 jobs submitted at once from 100 client threads: all accepted (HTTP 201, no 5xx), all finish
     (none lost), none runs twice (one start and one artifact per job).

    python bench/bench_platform.py [--jobs 20] [--burst 100] [--concurrency 100] [--probes 50] [--only-burst]
                                   [--json out.json]

With DATABASE_URL set (PostgreSQL), the stack runs on a fresh database created there (and dropped after);
otherwise on a SQLite file. The stack is the one the end-to-end tests use (tests/e2e/stack.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import ACCOUNTS, CHROMIUM, CHROMIUM_ARGS, Api, write_pair  # noqa: E402
from tests.e2e.stack import start_stack  # noqa: E402

TERMINAL = {"succeeded", "failed", "cancelled"}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def iso_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def wait_job(api: Api, job_id: int, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job = api.get(f"/api/v1/jobs/{job_id}/")
        if job.get("status") in TERMINAL:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not finish")


def make_pair(api: Api, stack, name: str, rows: int, tensors: int) -> int:
    base, ft = write_pair(stack.models_root / name, tensors=tensors, rows=rows, cols=256)
    ids = []
    for suffix, path in (("base", base), ("ft", ft)):
        status, body = api.post("/api/v1/models/", {"team": "acme", "name": f"{name}-{suffix}", "path": str(path)})
        assert status == 201, body
        ids.append(body["id"])
    status, pair = api.post("/api/v1/pairs/", {"team": "acme", "name": name, "base": ids[0], "finetuned": ids[1]})
    assert status == 201, pair
    return pair["id"]


def bench_start_latency(api: Api, pair_id: int, n: int) -> dict:
    latencies, server_side = [], []
    for _ in range(n):
        time.sleep(0.3)                      # the worker is idle when the job arrives
        t0 = time.time()
        status, job = api.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                                 "codec_config": {"id": "zstd"}})
        assert status == 201, job
        final = wait_job(api, job["id"])
        assert final["status"] == "succeeded", final
        started = iso_ts(final["started_at"])
        latencies.append((started - t0) * 1000)
        server_side.append((started - iso_ts(final["created_at"])) * 1000)
    return {"n": n, "median_ms": statistics.median(latencies), "p90_ms": pct(latencies, 0.9),
            "max_ms": max(latencies), "row_created_to_started_median_ms": statistics.median(server_side)}


def bench_progress_latency(stack, accounts, api: Api, pair_id: int, probes: int) -> dict:
    from playwright.sync_api import sync_playwright

    # Django in this process, on the stack's database and Redis, to call the real publisher.
    os.environ.update(stack.env)
    import django

    django.setup()
    from webapp.jobs.models import Job
    from webapp.jobs.reporter import job_progress_publish

    status, job = api.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                             "codec_config": {"id": "zstd"}})
    assert status == 201, job
    wait_job(api, job["id"])
    token = accounts["alice"]["token"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(base_url=stack.base_url)
        page.goto("/login/")
        page.evaluate("""([path]) => new Promise((resolve) => {
            window.__recv = {}; window.__live = [];
            const ws = new WebSocket(`ws://${location.host}${path}`);
            ws.onopen = () => resolve(true);
            ws.onmessage = (e) => { const m = JSON.parse(e.data); const now = Date.now();
              if (m.job && m.job.stage && m.job.stage.startsWith('probe-')) window.__recv[m.job.stage] = now;
              if (m.type === 'job.update') window.__live.push([m.job.id, m.job.progress, m.job.status]); };
        })""", [f"/ws/teams/acme/jobs/?token={token}"])
        # 1. publish -> browser, with the worker's own publish function (from a plain thread: Playwright's sync
        # API keeps an event loop in this one, where Django refuses ORM calls).
        def publish_all() -> dict:
            row = Job.objects.select_related("team").get(pk=job["id"])
            job_progress_publish(job=row)        # warm up this process's Redis connections
            time.sleep(0.2)
            sent = {}
            for i in range(probes):
                row.stage = f"probe-{i}"
                sent[row.stage] = time.time() * 1000
                job_progress_publish(job=row)
                time.sleep(0.05)
            return sent

        with ThreadPoolExecutor(max_workers=1) as pool:
            sent = pool.submit(publish_all).result()
        page.wait_for_function(f"Object.keys(window.__recv).length >= {probes}", timeout=30_000)
        received = page.evaluate("window.__recv")
        latencies = [received[k] - sent[k] for k in sent]
        # 2. a real job on the worker: how many live updates did the browser get before the end?
        big = make_pair(api, stack, "bench-live", rows=2048, tensors=24)
        status, live_job = api.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": big,
                                                      "codec_config": {"id": "fmdelta"}})
        assert status == 201, live_job
        final = wait_job(api, live_job["id"])
        page.wait_for_function(
            f"window.__live.some(m => m[0] === {live_job['id']} && m[2] === '{final['status']}')", timeout=30_000)
        updates = [m for m in page.evaluate("window.__live") if m[0] == live_job["id"]]
        browser.close()
    return {"probes": probes, "median_ms": statistics.median(latencies), "p90_ms": pct(latencies, 0.9),
            "max_ms": max(latencies), "real_job_status": final["status"],
            "real_job_updates_in_browser": len(updates),
            "real_job_intermediate": len({m[1] for m in updates if 0 < m[1] < 100}),
            "real_job_seconds": iso_ts(final["finished_at"]) - iso_ts(final["started_at"])}


def bench_burst(api: Api, pair_id: int, n: int, concurrency: int) -> dict:
    """``n`` submissions from ``concurrency`` client threads at once; every accepted job must finish exactly once
    (one start, one artifact), and no request may fail (a saturated database answers 503, counted as an error)."""
    def submit(_):
        return api.post("/api/v1/jobs/", {"team": "acme", "kind": "compress", "pair": pair_id,
                                          "codec_config": {"id": "zstd"}})

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(submit, range(n)))
    submitted = time.monotonic() - t0
    accepted = [body["id"] for status, body in results if status == 201]
    errors = {}
    for status, _ in results:
        if status != 201:
            errors[status] = errors.get(status, 0) + 1
    deadline = time.monotonic() + 600
    finals, statuses = [], {}
    for job_id in accepted:
        try:
            finals.append(wait_job(api, job_id, timeout=max(1.0, deadline - time.monotonic())))
        except TimeoutError:           # never finished: lost
            statuses["stuck"] = statuses.get("stuck", 0) + 1
    total = time.monotonic() - t0
    for job in finals:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
    # A job run twice starts twice (attempts) or leaves two artifacts of its own.
    per_job, offset = {}, 0
    while True:
        status, page = api.get(f"/api/v1/artifacts/?pair={pair_id}&limit=100&offset={offset}")
        assert status == 200, page
        for artifact in page["results"]:
            per_job[artifact["job_id"]] = per_job.get(artifact["job_id"], 0) + 1
        offset += len(page["results"])
        if not page["results"] or not page.get("next"):
            break
    duplicates = sum(1 for job in finals if job.get("attempts", 1) > 1 or per_job.get(job["id"], 0) > 1)
    return {"submitted": n, "concurrency": concurrency, "accepted": len(accepted), "errors": errors,
            "submit_seconds": submitted, "statuses": statuses, "duplicates": duplicates,
            "all_finished_seconds": total, "jobs_per_second": len(accepted) / total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="jobs for the start-latency median")
    parser.add_argument("--probes", type=int, default=50, help="published updates for the browser latency")
    parser.add_argument("--burst", type=int, default=100, help="jobs submitted at once")
    parser.add_argument("--concurrency", type=int, default=0, help="client threads for the burst (default: --burst)")
    parser.add_argument("--only-burst", action="store_true", help="skip the latency parts")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="deltavault-bench-"))
    print(f"starting the stack in {home} …", flush=True)
    stack = start_stack(home, extra_env={"DELTAVAULT_PROGRESS_INTERVAL": "0.1"})
    try:
        accounts = stack.seed(ACCOUNTS)
        api = Api(stack.base_url, accounts["alice"]["token"])
        small = make_pair(api, stack, "bench-small", rows=64, tensors=4)
        results = {"database": "postgresql" if stack.database_url else "sqlite"}
        if not args.only_burst:
            results["start_latency"] = bench_start_latency(api, small, args.jobs)
            print(f"submit -> worker start: median {results['start_latency']['median_ms']:.1f} ms "
                  f"(p90 {results['start_latency']['p90_ms']:.1f}, max {results['start_latency']['max_ms']:.1f}; "
                  f"target < 250 ms) over {args.jobs} jobs", flush=True)
            results["progress_latency"] = bench_progress_latency(stack, accounts, api, small, args.probes)
            pl = results["progress_latency"]
            print(f"progress publish -> browser: median {pl['median_ms']:.1f} ms (p90 {pl['p90_ms']:.1f}, "
                  f"max {pl['max_ms']:.1f}; target < 500 ms) over {pl['probes']} updates; a real FM-Delta job "
                  f"({pl['real_job_seconds']:.2f} s) gave the browser {pl['real_job_updates_in_browser']} live "
                  f"updates ({pl['real_job_intermediate']} intermediate)", flush=True)
        results["burst"] = bench_burst(api, small, args.burst, args.concurrency or args.burst)
        b = results["burst"]
        print(f"burst ({results['database']}): {b['accepted']}/{b['submitted']} accepted from {b['concurrency']} "
              f"concurrent clients in {b['submit_seconds']:.2f} s, errors {b['errors'] or 0}, finished "
              f"{b['statuses']}, duplicates {b['duplicates']}, after {b['all_finished_seconds']:.1f} s "
              f"({b['jobs_per_second']:.1f} jobs/s, one worker process)", flush=True)
        print(json.dumps(results, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        lost = b["submitted"] - b["statuses"].get("succeeded", 0)
        return 0 if lost == 0 and not b["errors"] and not b["duplicates"] else 1
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main())
