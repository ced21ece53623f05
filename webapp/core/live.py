"""Pushes to open WebSockets that do not belong to one job: ask a user's sockets to check their access again."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction


def user_group(user_id: int) -> str:
    """The channel-layer group every WebSocket of a user joins."""
    return f"user-{user_id}"


def user_sockets_recheck(*, user_id: int) -> None:
    """After the transaction commits, make each open socket of the user check its access again (it closes with
    4403 if the membership or the token it relied on is gone)."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(user_group(user_id), {"type": "access.recheck"})

    transaction.on_commit(send)
