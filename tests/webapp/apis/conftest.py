"""Fixtures shared by the REST API tests."""

from __future__ import annotations

from unittest import mock

import pytest
from rest_framework.authtoken.models import Token


@pytest.fixture
def task():
    """The Celery task job_submit queues, replaced (API tests check what is queued, not the work)."""
    with mock.patch("webapp.jobs.services.run_job_task") as task:
        yield task


@pytest.fixture
def as_user(api_client):
    """``as_user(user)``: the API client authenticated with that user's token."""
    def _as(user):
        token, _ = Token.objects.get_or_create(user=user)
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return api_client

    return _as
