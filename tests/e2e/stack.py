"""Start the real DeltaVault stack as subprocesses on free localhost ports: a private redis-server, a Celery worker
(prefork, one process, queues cpu+gpu) and daphne, all on one database (a SQLite file in a temporary
DELTAVAULT_HOME, or a fresh PostgreSQL database when DATABASE_URL is set) with the Redis channel layer.

Used by the end-to-end tests (tests/e2e/conftest.py) and by bench/bench_platform.py.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
SETTINGS = "webapp.settings.local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return ""


@dataclass
class Stack:
    home: Path
    env: dict
    base_url: str
    redis_url: str
    database_url: str | None
    procs: dict = field(default_factory=dict)
    _pg_admin: tuple | None = None

    @property
    def models_root(self) -> Path:
        return self.home / "models"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def log_tails(self) -> str:
        return "\n".join(f"----- {p.name} -----\n{tail(p)}" for p in sorted(self.logs.glob("*.log")))

    def manage(self, *args: str, input: str | None = None, timeout: float = 180) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env, input=input,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def python(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` in a fresh Django process on the stack's database; returns stdout."""
        prelude = "import django; django.setup()\n"
        result = subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"script failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def seed(self, spec: dict) -> dict:
        """Create users, teams and tokens (tests/e2e/seed.py); returns what it made."""
        out = subprocess.run([sys.executable, str(Path(__file__).with_name("seed.py"))], cwd=REPO, env=self.env,
                             input=json.dumps(spec), capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"seed failed:\n{out.stdout}\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    # -- processes ------------------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_worker(self, timeout: float = 120, queues: str = "cpu,gpu") -> None:
        log = self.logs / "worker.log"
        start = log.stat().st_size if log.exists() else 0
        proc = self._spawn("worker", [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
                                      "-Q", queues, "-P", "prefork", "-c", "1", "-l", "info",
                                      "-n", f"e2e-{secrets.token_hex(3)}@%h",
                                      "--without-gossip", "--without-mingle", "--without-heartbeat"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{tail(log)}")
            with open(log, "rb") as f:
                f.seek(start)
                if b" ready." in f.read():
                    return
            time.sleep(0.1)
        raise TimeoutError(f"celery worker not ready within {timeout} s:\n{tail(log)}")

    def kill(self, name: str) -> None:
        """SIGKILL the whole process group (a worker's main process and its pool children): nothing runs its
        shutdown code."""
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def start_redis(self) -> None:
        """(Re)start the stack's redis-server on its port, without persistence: a restart loses what it held."""
        port = urlsplit(self.redis_url).port
        redis = self._spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.home)])
        wait_for_port(port, 20, redis, "redis-server")

    def stop(self, name: str, timeout: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def close(self) -> None:
        for name in ("web", "worker", "redis"):
            self.stop(name)
        if self._pg_admin is not None:
            _pg_drop(*self._pg_admin)


def _pg_admin_conn(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 5432,
                           user=parts.username, password=parts.password,
                           dbname=(parts.path or "/postgres").lstrip("/") or "postgres", autocommit=True)


def _pg_create(url: str, name: str) -> str:
    with _pg_admin_conn(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _pg_drop(url: str, name: str) -> None:
    with _pg_admin_conn(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_stack(home: Path, *, extra_env: dict | None = None) -> Stack:
    """Start redis, migrate a fresh database, start a Celery worker and daphne. Call ``close()`` when done."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "models").mkdir(exist_ok=True)
    redis_port, web_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DELTAVAULT_HOME": str(home),
        "DELTAVAULT_MODEL_ROOTS": str(home / "models"),
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": f"e2e{redis_port}",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{web_port},http://localhost:{web_port}",
        "DELTAVAULT_PROGRESS_INTERVAL": "0.02",
        "DELTAVAULT_CANCEL_CHECK_INTERVAL": "0.05",
        "DELTAVAULT_JOB_THREADS": "1",
        # Heartbeats and sweeps in fractions of seconds, so fault tests take seconds, not minutes.
        "DELTAVAULT_WORKER_HEARTBEAT": "0.5",
        "DELTAVAULT_WORKER_TIMEOUT": "5",
        "DELTAVAULT_SWEEP_INTERVAL": "1",
        "DELTAVAULT_RECONCILE_GRACE": "2",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    })
    env.update(extra_env or {})
    admin = None
    database_url = os.environ.get("DATABASE_URL") or None
    if database_url:
        name = f"deltavault_e2e_{os.getpid()}_{secrets.token_hex(3)}"
        env["DATABASE_URL"] = _pg_create(database_url, name)
        admin = (database_url, name)
    else:
        env.pop("DATABASE_URL", None)
    stack = Stack(home=home, env=env, base_url=f"http://127.0.0.1:{web_port}", redis_url=redis_url,
                  database_url=env.get("DATABASE_URL"), _pg_admin=admin)
    try:
        stack.start_redis()
        stack.manage("migrate", "--noinput", "-v", "0")
        stack.manage("collectstatic", "--noinput", "-v", "0")  # as scripts/run: DEBUG off, WhiteNoise serves these
        if not database_url:
            # WAL lets daphne read while the worker writes progress (the mode is stored in the file).
            with sqlite3.connect(home / "db.sqlite3") as db:
                db.execute("PRAGMA journal_mode=WAL")
        stack.start_worker()
        web = stack._spawn("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                                   "webapp.asgi:application"])
        wait_for_port(web_port, 60, web, "daphne")
    except Exception as exc:
        logs = stack.log_tails()
        stack.close()
        raise RuntimeError(f"could not start the stack: {exc}\n{logs}") from exc
    except BaseException:
        stack.close()
        raise
    return stack
