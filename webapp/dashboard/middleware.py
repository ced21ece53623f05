"""WebSocket authentication by DRF token: ``wss://host/ws/jobs/42/?token=<key>``.

Sits inside ``AuthMiddlewareStack``: a valid token replaces the session user; an invalid token leaves an anonymous
user (the consumer then refuses the connection); no token keeps the session user.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        keys = query.get("token")
        if keys:
            # The key stays in the scope: the consumer checks it again when the user's access changes.
            scope = dict(scope, user=await _user_for_token(keys[0]), auth_token=keys[0])
        return await super().__call__(scope, receive, send)
