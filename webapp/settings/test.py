"""Test settings. DELTAVAULT_HOME defaults to a fresh temporary folder per test session (set in the environment,
so a worker process started by the end-to-end tests uses the same one). Celery tasks are not run eagerly: unit
tests call services and tasks directly; end-to-end tests use a real worker. The channel layer stays the Redis one
(end-to-end tests need it); unit tests that publish override it to the in-memory layer."""

import atexit
import os
import shutil
import tempfile

if not os.environ.get("DELTAVAULT_HOME"):
    _home = tempfile.mkdtemp(prefix="deltavault-test-")
    os.environ["DELTAVAULT_HOME"] = _home
    _owner_pid = os.getpid()

    def _remove_test_home() -> None:
        if os.getpid() == _owner_pid:
            shutil.rmtree(_home, ignore_errors=True)

    atexit.register(_remove_test_home)

from .base import *  # noqa: E402, F403

DEBUG = False
SECRET_KEY = "django-insecure-test-only"
ALLOWED_HOSTS = ["*"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_EAGER_PROPAGATES = True
# Test servers (live_server, daphne in e2e) serve static files without collectstatic.
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
# A file (not in-memory) SQLite test database, so a worker process in the end-to-end tests sees the same rows.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DELTAVAULT_HOME / "test-db.sqlite3")}  # noqa: F405
# Keep job progress snappy in tests.
DELTAVAULT_PROGRESS_INTERVAL = 0.05
DELTAVAULT_CANCEL_CHECK_INTERVAL = 0.0
# Serve static files straight from the finders (no collectstatic in tests).
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
