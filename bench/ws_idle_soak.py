"""Idle WebSocket soak on the real stack (daphne, the Redis channel layer, Chromium): open sockets, send nothing for
``--minutes`` (default 10), then publish one update through the worker's publish function and check that every
socket is still open and receives it. Before the fix, daphne closed every idle socket with 1011 after ~5 s
(redis-py's 5 s socket timeout against channels-redis's 5 s blocking pop).

    python bench/ws_idle_soak.py [--minutes 10] [--sockets 4]

The unit test tests/webapp/consumers/test_redis_layer_idle.py checks the same on the layer for
DELTAVAULT_WS_IDLE_SECONDS (default 12 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import ACCOUNTS, CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.e2e.stack import start_stack  # noqa: E402

OPEN = """([path, n]) => Promise.all(Array.from({length: n}, (_, i) => new Promise((resolve) => {
  window.__socks = window.__socks || [];
  const s = {closed: null, messages: 0, probe: false};
  const ws = new WebSocket(`ws://${location.host}${path}`);
  window.__socks.push(s);
  ws.onopen = () => resolve(true);
  ws.onmessage = (e) => { s.messages += 1; const m = JSON.parse(e.data);
                          if (m.job && m.job.stage === 'soak-probe') s.probe = true; };
  ws.onclose = (e) => { s.closed = e.code; resolve(false); };
})))"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sockets", type=int, default=4)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="deltavault-soak-"))
    stack = start_stack(home)
    try:
        accounts = stack.seed(ACCOUNTS)
        token = accounts["alice"]["token"]
        os.environ.update(stack.env)
        import django

        django.setup()
        from playwright.sync_api import sync_playwright

        from webapp.jobs.models import Job
        from webapp.jobs.reporter import job_progress_publish
        from webapp.teams.models import Team

        def make_job():
            return Job.objects.create(team=Team.objects.get(slug="acme"), kind="compress",
                                      codec_config={"id": "zstd"}, status=Job.Status.FAILED)

        def publish(job):
            job.stage = "soak-probe"
            job_progress_publish(job=job)

        with ThreadPoolExecutor(max_workers=1) as pool:   # ORM calls off Playwright's event-loop thread
            job = pool.submit(make_job).result()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(base_url=stack.base_url)
                page.goto("/login/")
                opened = page.evaluate(OPEN, [f"/ws/teams/acme/jobs/?token={token}", args.sockets])
                assert all(opened), opened
                t0 = time.monotonic()
                print(f"{args.sockets} sockets open; idle for {args.minutes} min …", flush=True)
                time.sleep(args.minutes * 60)
                idle = time.monotonic() - t0
                pool.submit(publish, job).result()
                time.sleep(2)
                socks = page.evaluate("window.__socks")
                browser.close()
    finally:
        stack.close()
    still_open = sum(1 for s in socks if s["closed"] is None)
    got_probe = sum(1 for s in socks if s["probe"])
    result = {"sockets": args.sockets, "idle_seconds": round(idle, 1), "still_open": still_open,
              "received_update_after_idle": got_probe, "close_codes": [s["closed"] for s in socks]}
    print(json.dumps(result))
    return 0 if still_open == got_probe == args.sockets else 1


if __name__ == "__main__":
    sys.exit(main())
