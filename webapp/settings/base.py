"""Settings shared by every environment. Everything that differs between machines comes from the environment:

- ``DATABASE_URL``: any dj-database-url URL; default SQLite at ``$DELTAVAULT_HOME/db.sqlite3``.
- ``REDIS_URL``: Celery broker, result backend and the Channels layer; default ``redis://127.0.0.1:6379/0``
  (``rediss://`` turns TLS on).
- ``DELTAVAULT_HOME``: where the app keeps its files (artifacts, uploads, restored models); default ``<repo>/var``.
- ``DELTAVAULT_MODEL_ROOTS``: ``os.pathsep``-separated folders users may register models and datasets from;
  default ``$DELTAVAULT_HOME/models``.
"""

import os
import ssl
from datetime import timedelta
from pathlib import Path

import dj_database_url


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


BASE_DIR = Path(__file__).resolve().parents[2]

# ---- DeltaVault ----------------------------------------------------------------------------------------------
DELTAVAULT_HOME = Path(os.environ.get("DELTAVAULT_HOME") or BASE_DIR / "var").resolve()
DELTAVAULT_HOME.mkdir(parents=True, exist_ok=True)
DELTAVAULT_MODEL_ROOTS = [
    Path(p).resolve()
    for p in (os.environ.get("DELTAVAULT_MODEL_ROOTS") or str(DELTAVAULT_HOME / "models")).split(os.pathsep)
    if p.strip()
]
DELTAVAULT_ARTIFACTS_DIR = Path(os.environ.get("DELTAVAULT_ARTIFACTS_DIR") or DELTAVAULT_HOME / "artifacts")
DELTAVAULT_UPLOADS_DIR = DELTAVAULT_HOME / "uploads"
DELTAVAULT_RESTORED_DIR = DELTAVAULT_HOME / "restored"
DELTAVAULT_TMP_DIR = DELTAVAULT_HOME / "tmp"
# Largest total size of one model or dataset upload (all files together).
DELTAVAULT_MAX_UPLOAD_BYTES = env_int("DELTAVAULT_MAX_UPLOAD_BYTES", 4 * 1024**3)
# Threads a job may use when the job does not say (None: all usable cores).
DELTAVAULT_JOB_THREADS = env_int("DELTAVAULT_JOB_THREADS", 0) or None
# How often a running job writes its progress to the database and publishes it (seconds).
DELTAVAULT_PROGRESS_INTERVAL = float(os.environ.get("DELTAVAULT_PROGRESS_INTERVAL", "0.2"))
# How often a running job reads cancel_requested from the database (seconds).
DELTAVAULT_CANCEL_CHECK_INTERVAL = float(os.environ.get("DELTAVAULT_CANCEL_CHECK_INTERVAL", "0.5"))
# Workers and the sweeper (webapp.jobs.worker_services; run by every worker, workers/heartbeat.py). A worker writes
# its heartbeat every HEARTBEAT seconds and counts as gone after TIMEOUT seconds of silence; every SWEEP seconds a
# worker fails (or, with ORPHAN_REQUEUE, requeues once) the running jobs no live worker holds, and re-sends the
# queued jobs older than RECONCILE_GRACE seconds that have no broker message. Defaults: a dead worker's job is
# failed within TIMEOUT + SWEEP = 90 s.
DELTAVAULT_WORKER_HEARTBEAT = float(os.environ.get("DELTAVAULT_WORKER_HEARTBEAT", "10"))
DELTAVAULT_WORKER_TIMEOUT = float(os.environ.get("DELTAVAULT_WORKER_TIMEOUT", "60"))
DELTAVAULT_SWEEP_INTERVAL = float(os.environ.get("DELTAVAULT_SWEEP_INTERVAL", "30"))
DELTAVAULT_RECONCILE_GRACE = float(os.environ.get("DELTAVAULT_RECONCILE_GRACE", "30"))
DELTAVAULT_ORPHAN_REQUEUE = env_bool("DELTAVAULT_ORPHAN_REQUEUE", False)
# A task that meets a database error (connection refused, slots exhausted) is retried this many times, waiting
# 1, 2, 4 … (at most 60) seconds in between.
DELTAVAULT_TASK_DB_RETRIES = env_int("DELTAVAULT_TASK_DB_RETRIES", 8)
# Hours a decompress job's restored copy (under DELTAVAULT_RESTORED_DIR) is kept unless the job is pinned.
DELTAVAULT_RESTORED_TTL_HOURS = float(os.environ.get("DELTAVAULT_RESTORED_TTL_HOURS", "24"))
# Minutes between housekeeping runs (Celery beat): expire restored copies, remove files no row points at.
DELTAVAULT_HOUSEKEEPING_MINUTES = float(os.environ.get("DELTAVAULT_HOUSEKEEPING_MINUTES", "15"))

# ---- Django --------------------------------------------------------------------------------------------------
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "webapp.core",
    "webapp.teams",
    "webapp.registry",
    "webapp.jobs",
    "webapp.dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.core.middleware.DatabaseBusyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused for too many failures into the lockout response (AXES_LOCKOUT_CALLABLE).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{DELTAVAULT_HOME / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# PostgreSQL connections are bounded: with DATABASE_POOL_MAX_SIZE > 0 a process shares at most that many
# connections (psycopg_pool), a request waits up to DATABASE_POOL_TIMEOUT seconds for one and then gets a 503
# (webapp.core.middleware.DatabaseBusyMiddleware). The web server turns it on (webapp/asgi.py: each concurrent
# request runs in its own thread and would otherwise open its own connection); workers hold one per process.
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 0)
if DATABASE_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # pooled connections go back to the pool, not kept per thread
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": float(os.environ.get("DATABASE_POOL_TIMEOUT", "10")),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the workers write concurrently: take the write lock at BEGIN and wait for it (instead of
    # failing with "database is locked" when a deferred transaction upgrades), and let readers run beside a writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): every authenticate() call, the /login/ form and the API token endpoint alike,
# is counted; after AXES_FAILURE_LIMIT failures from one address, or for one username from anywhere, further
# attempts are refused (429) for the cool-off time, even with the right password. `manage.py axes_reset` unlocks.
AUTHENTICATION_BACKENDS = [
    "webapp.core.auth_backends.ThrottledLoginBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("DELTAVAULT_LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("DELTAVAULT_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "webapp.core.lockout.lockout_response"
AXES_VERBOSE = False

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DELTAVAULT_HOME / "staticfiles"
STATICFILES_DIRS = [p for p in [BASE_DIR / "static"] if p.is_dir()]

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DELTAVAULT_HOME / "media")},
    },
    # Compressed artifacts. Jobs code into a local temporary file, then move it here (a local storage) or upload
    # it through the storage API (S3 and the like: a settings change, e.g. django-storages' S3Storage); restores
    # download a temporary local copy when the storage has no local paths.
    "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(DELTAVAULT_ARTIFACTS_DIR)},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Uploads larger than this go to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 1000
FILE_UPLOAD_TEMP_DIR = None

# ---- Django REST framework / drf-spectacular -----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "webapp.core.exception_handler.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "webapp.core.schema.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "DeltaVault API",
    "DESCRIPTION": "Register fine-tuned models, compress them against their base, restore, verify and evaluate.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # several models have fields "queue" and "kind": name each choice set
    "ENUM_NAME_OVERRIDES": {"JobQueueEnum": "webapp.jobs.models.Job.Queue",
                            "JobQueueSubmitEnum": "webapp.jobs.models.QUEUE_SUBMIT_CHOICES",
                            "DatasetKindEnum": "webapp.registry.models.Dataset.Kind",
                            "JobKindEnum": "webapp.jobs.models.Job.Kind"},
}

# ---- Redis, Channels -----------------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SSL = REDIS_URL.startswith("rediss://")

# channels-redis waits for a socket's next message with a blocking pop of 5 s (``brpop_timeout``); redis-py's
# default socket timeout is 5 s too, so an idle socket's read could time out first and daphne closed it (1011)
# every ~5 s. The read timeout must stay well above the blocking pop.
CHANNELS_REDIS_SOCKET_TIMEOUT = float(os.environ.get("CHANNELS_REDIS_SOCKET_TIMEOUT", "30"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNELS_REDIS_SOCKET_TIMEOUT,
                       "socket_connect_timeout": 5, "socket_keepalive": True}],
            "prefix": os.environ.get("CHANNELS_PREFIX", "deltavault"),
        },
    }
}

# ---- Celery --------------------------------------------------------------------------------------------------
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
if REDIS_SSL:
    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    CELERY_REDIS_BACKEND_USE_SSL = CELERY_BROKER_USE_SSL
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_BACKEND_ALWAYS_RETRY = True
CELERY_RESULT_BACKEND_MAX_RETRIES = 10
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Compressing a large checkpoint takes a while: generous limits, soft below hard so the job can record why it
# stopped. (The soft limit fires only when Python regains control; the codecs work in chunks so it does.)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 6 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", CELERY_TASK_TIME_LIMIT - 300)
# A job is acknowledged when it has finished (a worker node that vanishes hands it on after the visibility
# timeout); one job per process. A pool process killed mid-job (OOM, hard time limit) is not requeued, which
# could loop forever on a job that always dies: the job is marked failed (workers.tasks) and can be retried.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis redelivers unacknowledged tasks after the visibility timeout: keep it above the hard time limit.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = "cpu"
# run_job is sent with apply_async(queue=job.queue); the route is the fallback for a plain .delay().
CELERY_TASK_ROUTES = {"workers.tasks.run_job": {"queue": "cpu"}, "workers.tasks.housekeeping": {"queue": "cpu"}}
# Celery beat (``celery worker -B`` in scripts/run, the ``beat`` service in docker-compose).
CELERY_BEAT_SCHEDULE = {
    "housekeeping": {"task": "workers.tasks.housekeeping", "schedule": DELTAVAULT_HOUSEKEEPING_MINUTES * 60},
}

# ---- Logging -------------------------------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("DELTAVAULT_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "verbose": {"format": "%(levelname)s %(asctime)s %(name)s %(process)d %(message)s"},
    },
    "handlers": {
        "console": {"level": "DEBUG", "class": "logging.StreamHandler", "formatter": "verbose"},
    },
    "root": {"level": LOG_LEVEL, "handlers": ["console"]},
    "loggers": {
        "django.db.backends": {"level": "WARNING", "handlers": ["console"], "propagate": False},
        "celery": {"level": LOG_LEVEL, "handlers": ["console"], "propagate": False},
    },
}
