"""The Redis client: a real server when REDIS_URL is set, else an in-process compatible store.

The embedded store (fakeredis with Lua) runs the same commands, scripts and locks as a real
server, so the same code path serves both; it is per process, which is fine for one instance.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from app.settings import Settings

Redis = aioredis.Redis


def create_redis(settings: Settings) -> Redis:
    if settings.redis_url:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        return aioredis.Redis(connection_pool=pool)
    import fakeredis

    client: Any = fakeredis.FakeAsyncRedis()
    return client  # type: ignore[no-any-return]


def key(settings: Settings, *parts: str) -> str:
    """A namespaced Redis key: prefix + parts joined by ':'."""
    return settings.redis_key_prefix + ":".join(parts)
