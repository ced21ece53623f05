"""Settings modules, loaded in a fresh interpreter with a controlled environment."""

import json
import os
import subprocess
import sys

import pytest

_DUMP = (
    "import importlib, json, os, sys; m = importlib.import_module(sys.argv[1]);"
    "print(json.dumps({k: getattr(m, k) for k in sys.argv[2:]}, default=str))"
)


def _load(module: str, *names: str, **env) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", _DUMP, module, *names], capture_output=True, text=True,
                         env=environ, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__))))))
    if out.returncode:
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout)


class SettingsTests:
    def test_defaults(self, tmp_path):
        s = _load("webapp.settings.local", "DATABASES", "INSTALLED_APPS", "DELTAVAULT_MODEL_ROOTS",
                  "CELERY_BROKER_URL", "CHANNEL_LAYERS", "ASGI_APPLICATION", "STORAGES",
                  DELTAVAULT_HOME=str(tmp_path))
        assert s["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
        assert s["DATABASES"]["default"]["NAME"] == str(tmp_path / "db.sqlite3")
        assert s["INSTALLED_APPS"][0] == "daphne"
        for app in ("channels", "rest_framework", "rest_framework.authtoken", "django_filters", "drf_spectacular",
                    "drf_spectacular_sidecar", "webapp.core", "webapp.teams", "webapp.registry", "webapp.jobs",
                    "webapp.dashboard"):
            assert app in s["INSTALLED_APPS"]
        assert s["DELTAVAULT_MODEL_ROOTS"] == [str(tmp_path / "models")]
        assert s["CELERY_BROKER_URL"] == "redis://127.0.0.1:6379/0"
        assert s["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
        assert s["ASGI_APPLICATION"] == "webapp.asgi.application"
        assert s["STORAGES"]["artifacts"]["OPTIONS"]["location"] == str(tmp_path / "artifacts")

    def test_environment_overrides(self, tmp_path):
        roots = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
        s = _load("webapp.settings.local", "DATABASES", "DELTAVAULT_MODEL_ROOTS", "CELERY_BROKER_USE_SSL",
                  "CELERY_RESULT_BACKEND", DELTAVAULT_HOME=str(tmp_path), DELTAVAULT_MODEL_ROOTS=roots,
                  DATABASE_URL="postgres://u:p@db.example:5433/dv", REDIS_URL="rediss://cache.example:6380/1")
        db = s["DATABASES"]["default"]
        assert (db["ENGINE"], db["HOST"], db["PORT"], db["NAME"]) == (
            "django.db.backends.postgresql", "db.example", 5433, "dv")
        assert s["DELTAVAULT_MODEL_ROOTS"] == [str(tmp_path / "a"), str(tmp_path / "b")]
        assert s["CELERY_RESULT_BACKEND"] == "rediss://cache.example:6380/1"
        assert s["CELERY_BROKER_USE_SSL"]

    def test_production_refuses_to_start_without_secrets(self, tmp_path):
        with pytest.raises(RuntimeError, match="DJANGO_SECRET_KEY"):
            _load("webapp.settings.production", "DEBUG", DELTAVAULT_HOME=str(tmp_path))
        s = _load("webapp.settings.production", "DEBUG", "ALLOWED_HOSTS", "SESSION_COOKIE_SECURE",
                  DELTAVAULT_HOME=str(tmp_path), DJANGO_SECRET_KEY="x" * 50, DJANGO_ALLOWED_HOSTS="dv.example")
        assert s == {"DEBUG": False, "ALLOWED_HOSTS": ["dv.example"], "SESSION_COOKIE_SECURE": True}

    def test_test_settings_use_a_temporary_home_when_none_is_set(self):
        environ_home = os.environ.pop("DELTAVAULT_HOME", None)
        try:
            s = _load("webapp.settings.test", "DELTAVAULT_HOME", "PASSWORD_HASHERS", "CELERY_TASK_ALWAYS_EAGER")
        finally:
            if environ_home is not None:
                os.environ["DELTAVAULT_HOME"] = environ_home
        assert "deltavault-test-" in s["DELTAVAULT_HOME"]
        assert not os.path.exists(s["DELTAVAULT_HOME"])  # removed when that interpreter exited
        assert s["PASSWORD_HASHERS"] == ["django.contrib.auth.hashers.MD5PasswordHasher"]
        assert s["CELERY_TASK_ALWAYS_EAGER"] is False


@pytest.mark.django_db
class DatabaseTests:
    def test_the_suite_runs_on_the_configured_database(self, settings):
        from django.db import connection

        url = os.environ.get("DATABASE_URL", "")
        expected = "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"
        assert connection.vendor == expected


class OneCommandRunSettingsTests:
    """``scripts/run`` serves with webapp.settings.local: no debug pages, static files from collectstatic."""

    def test_debug_is_off_unless_asked_for(self, tmp_path):
        s = _load("webapp.settings.local", "DEBUG", "STORAGES", DELTAVAULT_HOME=str(tmp_path))
        assert s["DEBUG"] is False
        assert s["STORAGES"]["staticfiles"]["BACKEND"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
        assert _load("webapp.settings.local", "DEBUG", DELTAVAULT_HOME=str(tmp_path), DJANGO_DEBUG="1")["DEBUG"]

    def test_the_run_script_uses_those_settings(self):
        script = open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "scripts", "run")).read()
        assert "webapp.settings.local" in script and "collectstatic" in script and "export DJANGO_DEBUG" not in script

    def test_login_throttling_is_configured(self, tmp_path):
        s = _load("webapp.settings.base", "INSTALLED_APPS", "MIDDLEWARE", "AUTHENTICATION_BACKENDS",
                  DELTAVAULT_HOME=str(tmp_path))
        assert "axes" in s["INSTALLED_APPS"] and s["MIDDLEWARE"][-1] == "axes.middleware.AxesMiddleware"
        assert s["AUTHENTICATION_BACKENDS"][0] == "webapp.core.auth_backends.ThrottledLoginBackend"
