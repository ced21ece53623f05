"""Writes the dashboard owns: the user's REST API token (DRF ``authtoken``, one per user)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> Token:
    """A new token for ``user``; an existing one is revoked (there is one token per user)."""
    Token.objects.filter(user=user).delete()
    token = Token(user=user)
    token.save()   # Token.save() generates the key; full_clean() would reject the empty key first
    return token


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser) -> bool:
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)
