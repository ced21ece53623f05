"""The Celery app. Run a worker with ``celery -A workers.celery_app worker -Q cpu`` (add ``-Q gpu`` on machines
with an accelerator)."""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")

app = Celery("deltavault")

# All Celery settings live in Django settings, prefixed CELERY_.
app.config_from_object("django.conf:settings", namespace="CELERY")


@setup_logging.connect
def config_loggers(*args, **kwargs):
    """Use Django's LOGGING instead of Celery's own logging setup."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


app.autodiscover_tasks(["workers"])

# Heartbeat, sweep and reconciliation thread of every worker (signal handlers).
from workers import heartbeat  # noqa: E402, F401
