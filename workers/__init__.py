"""Celery workers. Importing the package loads the app, so ``shared_task`` binds to it."""

from workers.celery_app import app as celery_app

__all__ = ["celery_app"]
