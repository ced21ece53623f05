"""Writes the dashboard owns: the user's REST API token (DRF ``authtoken``, one per user)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from rest_framework.authtoken.models import Token

from webapp.core.live import user_sockets_recheck


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> Token:
    """A new token for ``user``; an existing one is revoked (there is one token per user)."""
    if Token.objects.filter(user=user).delete()[0]:
        user_sockets_recheck(user_id=user.pk)  # sockets opened with the old token close
    token = Token(user=user)
    token.save()   # Token.save() generates the key; full_clean() would reject the empty key first
    return token


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser) -> bool:
    deleted, _ = Token.objects.filter(user=user).delete()
    if deleted:
        user_sockets_recheck(user_id=user.pk)  # sockets opened with the token close within seconds
    return bool(deleted)
