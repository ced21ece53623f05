"""The deployment files are valid: docker-compose.yml has the services, shared volume, GPU reservation and
healthchecks the README promises; the shell entry points parse and are executable."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
APP_SERVICES = ("web", "worker-gpu", "worker-cpu")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_all_services(compose):
    assert set(compose["services"]) == {"web", "worker-gpu", "worker-cpu", "beat", "redis", "postgres"}
    for name, service in compose["services"].items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service["healthcheck"]["test"], name


def test_app_services_share_the_data_volume_and_settings(compose):
    assert "deltavault-data" in compose["volumes"]
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert "deltavault-data:/data" in service["volumes"], name
        env = service["environment"]
        assert env["DELTAVAULT_HOME"] == "/data"
        assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_listen_on_their_queues_and_gpu_is_reserved(compose):
    services = compose["services"]
    gpu_cmd = services["worker-gpu"]["command"]
    cpu_cmd = services["worker-cpu"]["command"]
    assert gpu_cmd[:4] == ["celery", "-A", "workers.celery_app", "worker"]
    assert gpu_cmd[gpu_cmd.index("-Q") + 1] == "gpu"
    assert cpu_cmd[cpu_cmd.index("-Q") + 1] == "cpu"
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["worker-cpu"]
    assert "webapp.asgi:application" in services["web"]["command"]


def test_dockerfile_pins_torch_and_serves_the_asgi_app():
    text = (REPO / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in text
    assert "webapp.asgi:application" in text


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI here; the structure is checked by the tests above")
    result = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["scripts/bootstrap", "scripts/run", "scripts/test", ".ci/run"])
def test_entry_scripts_are_executable_bash(script):
    path = REPO / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_periodic_housekeeping_runs_in_compose_and_scripts_run(compose):
    """Restored copies expire only if Celery beat runs: a beat service in compose, ``-B`` in scripts/run."""
    import re

    from django.conf import settings

    assert compose["services"]["beat"]["command"][:4] == ["celery", "-A", "workers.celery_app", "beat"]
    assert settings.CELERY_BEAT_SCHEDULE["housekeeping"]["task"] == "workers.tasks.housekeeping"
    run = (REPO / "scripts" / "run").read_text()
    assert re.search(r"celery -A workers.celery_app worker .*-B ", run)
