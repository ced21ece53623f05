"""GET /api/v1/workers/, the queue warning on submitted jobs, queue "auto", and the 503 a busy database answers."""

from unittest import mock

import pytest

from tests.factories import job_create, pair_create
from webapp.jobs.models import Job
from webapp.jobs.worker_services import worker_heartbeat

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("task")]

API = "/api/v1"


def _beat(name, queues, device=None, held=()):
    return worker_heartbeat(name=name, hostname="host", pid=7, queues=queues, held_jobs=list(held),
                            device=device or {"cpu_cores": 16})


class WorkerListApiTests:
    def test_lists_live_workers_with_device_and_only_the_users_current_jobs(self, world, as_user):
        gpu = _beat("gpu@host", ["gpu"], {"cpu_cores": 16, "gpu_name": "NVIDIA H200", "gpu_memory_bytes": 150_000})
        mine = job_create(team=world["acme"], status=Job.Status.RUNNING, worker=gpu)
        job_create(team=world["other"], status=Job.Status.RUNNING, worker=gpu)
        response = as_user(world["alice"]).get(f"{API}/workers/")
        assert response.status_code == 200
        (worker,) = response.json()
        assert worker["name"] == "gpu@host" and worker["queues"] == ["gpu"]
        assert worker["device"] == {"cpu_cores": 16, "gpu_name": "NVIDIA H200", "gpu_memory_bytes": 150_000}
        assert [j["id"] for j in worker["current_jobs"]] == [mine.pk]   # not the other team's job
        assert worker["running_jobs"] == 2 and worker["last_heartbeat"]

    def test_needs_authentication(self, api_client):
        assert api_client.get(f"{API}/workers/").status_code == 401


class QueueWarningTests:
    def test_a_job_on_a_queue_no_live_worker_serves_is_flagged_at_submit(self, world, as_user):
        _beat("cpu@host", ["cpu"])
        pair = pair_create(team=world["acme"])
        client = as_user(world["alice"])
        gpu = client.post(f"{API}/jobs/", {"team": "acme", "kind": "compress", "pair": pair.pk,
                                           "codec_config": {"id": "zstd"}, "queue": "gpu"}, format="json").json()
        assert "No live worker serves the gpu queue" in gpu["queue_warning"]
        assert client.get(f"{API}/jobs/{gpu['id']}/").json()["queue_warning"] == gpu["queue_warning"]
        cpu = client.post(f"{API}/jobs/", {"team": "acme", "kind": "compress", "pair": pair.pk,
                                           "codec_config": {"id": "zstd"}, "queue": "cpu"}, format="json").json()
        assert cpu["queue_warning"] == ""


class AutoQueueTests:
    def _submit(self, client, pair, codec="zstd", **body):
        response = client.post(f"{API}/jobs/", {"team": "acme", "kind": "compress", "pair": pair.pk,
                                                "codec_config": {"id": codec}, **body}, format="json")
        assert response.status_code == 201, response.json()
        return response.json()

    def test_auto_is_the_default_and_sends_model_running_codecs_to_a_live_gpu_worker(self, world, as_user):
        import modelcodecs

        pair = pair_create(team=world["acme"])
        client = as_user(world["alice"])
        zstd = modelcodecs.get_codec_class("zstd")
        assert zstd.runs_models is False and modelcodecs.Codec.runs_models is False
        assert self._submit(client, pair)["queue"] == "cpu"
        with mock.patch.object(zstd, "runs_models", True):
            assert self._submit(client, pair)["queue"] == "cpu"             # no GPU worker live
            _beat("gpu@host", ["gpu"], {"cpu_cores": 8})                     # serves gpu, but torch sees no GPU
            assert self._submit(client, pair)["queue"] == "cpu"
            _beat("gpu@host", ["gpu"], {"cpu_cores": 8, "gpu_name": "NVIDIA H200"})
            assert self._submit(client, pair)["queue"] == "gpu"
            assert self._submit(client, pair, queue="cpu")["queue"] == "cpu"  # an explicit choice wins
        assert self._submit(client, pair)["queue"] == "cpu"                   # a codec that runs no model

    def test_unknown_queue_is_a_400(self, world, as_user):
        pair = pair_create(team=world["acme"])
        response = as_user(world["alice"]).post(f"{API}/jobs/", {"team": "acme", "kind": "compress", "pair": pair.pk,
                                                               "codec_config": "zstd", "queue": "tpu"}, format="json")
        assert response.status_code == 400


class DatabaseBusyTests:
    def test_a_saturated_database_answers_503_with_a_json_body(self, world, as_user):
        from django.db import OperationalError

        client = as_user(world["alice"])
        with mock.patch("webapp.jobs.apis.job_list",
                        side_effect=OperationalError("connection pool timeout: couldn't get a connection")):
            response = client.get(f"{API}/jobs/")
        assert response.status_code == 503
        assert response.json()["message"].startswith("The database is busy")
        assert response["Retry-After"] == "5"

    def test_the_web_server_bounds_postgresql_connections_with_a_pool(self, tmp_path):
        import os
        import subprocess
        import sys

        code = ("import os; os.environ['DJANGO_SETTINGS_MODULE']='webapp.settings.local';"
                "from django.conf import settings; import webapp.asgi;"
                "print(settings.DATABASES['default']['OPTIONS'].get('pool'))")
        env = dict(os.environ, DATABASE_URL="postgres://u:p@127.0.0.1:1/x", DELTAVAULT_HOME=str(tmp_path))
        env.pop("DATABASE_POOL_MAX_SIZE", None)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert "'max_size': 20" in out.stdout
