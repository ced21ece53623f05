"""The Redis channel layer as configured (webapp/settings/base.py) on a real Redis: a subscriber that receives
nothing for longer than channels-redis's 5 s blocking pop must not fail. With redis-py's default 5 s socket timeout
the read timed out first and daphne closed every idle socket with 1011 after ~5 s.

DELTAVAULT_WS_IDLE_SECONDS sets how long to stay idle (default 12 s: two blocking pops and more; the soak script
bench/ws_idle_soak.py keeps real sockets open for 10 minutes)."""

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

IDLE_SECONDS = float(os.environ.get("DELTAVAULT_WS_IDLE_SECONDS", "12"))


def _redis_up(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((parts.hostname or "127.0.0.1", parts.port or 6379)) == 0


@pytest.mark.slow
def test_an_idle_subscriber_outlives_the_blocking_pop():
    from channels_redis.core import RedisChannelLayer

    from webapp.settings import base

    if not _redis_up(base.REDIS_URL):
        pytest.skip(f"no Redis at {base.REDIS_URL}")

    async def idle_then_receive():
        config = dict(base.CHANNEL_LAYERS["default"]["CONFIG"], prefix=f"idle-test-{os.getpid()}")
        layer = RedisChannelLayer(**config)
        channel = await layer.new_channel()
        try:
            with pytest.raises(asyncio.TimeoutError):   # our own limit, not redis.exceptions.TimeoutError
                await asyncio.wait_for(layer.receive(channel), IDLE_SECONDS)
            await layer.send(channel, {"type": "job.update", "job": {"id": 1}})
            return (await asyncio.wait_for(layer.receive(channel), 5))["job"]
        finally:
            await layer.flush()
            await layer.close_pools()

    # A loop of its own on a thread of its own: other tests (Playwright's sync API) may hold this thread's loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(asyncio.run, idle_then_receive()).result() == {"id": 1}
