"""OAuth2 client-credentials access tokens, cached in Redis and refreshed under a Redis lock.

The thundering herd at expiry is the classic bug here, so the refresh path is layered:
an in-process memo (no Redis round trip on the hot path), one in-flight refresh per process,
a Redis lock across processes (held longer than the token request may take), a re-check of the
cache once the lock is ours, and a background refresh ahead of expiry. A token the partner
rejects is deleted only if it is still the cached one, so a newer token is never thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from opentelemetry.trace import Tracer
from redis.exceptions import LockError

from app.observability import TOKEN_REFRESHES
from app.redis import Redis, key
from app.settings import Settings
from app.upstream.errors import (
    TRANSPORT_ERRORS,
    PartnerAuthFailed,
    PartnerServerError,
    PartnerTimeout,
    PartnerUnreachable,
    UpstreamFailure,
    transport_error,
)

logger = logging.getLogger("sluice.tokens")

# Deletes the cached token only if it is still the one that was rejected.
_DELETE_IF_SAME = """
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    # Wall-clock epoch seconds, shared across processes through Redis.
    usable_until: float
    refresh_at: float

    def usable(self, now: float) -> bool:
        return now < self.usable_until

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at


class TokenManager:
    def __init__(
        self,
        name: str,
        *,
        settings: Settings,
        redis: Redis,
        session: aiohttp.ClientSession,
        token_url: str,
        tracer: Tracer,
    ) -> None:
        self.name = name
        self._settings = settings
        self._redis = redis
        self._session = session
        self._token_url = token_url
        self._tracer = tracer
        self._cache_key = key(settings, "token", name)
        self._lock_key = key(settings, "token-lock", name)
        # The lock outlives the token request, so a slow refresh never lets a second one start.
        self._lock_timeout = settings.partner_token_timeout + 5.0
        self._memo: AccessToken | None = None
        self._inflight: asyncio.Task[AccessToken] | None = None
        self._background: asyncio.Task[Any] | None = None
        self._delete_if_same = redis.register_script(_DELETE_IF_SAME)

    async def get(self) -> AccessToken:
        """A usable token: the memo, else the Redis cache, else a new one from the partner."""
        memo = self._memo
        now = time.time()
        if memo is not None and memo.usable(now):
            if not memo.fresh(now):
                self._refresh_in_background()
            return memo
        return await self._single_flight()

    async def invalidate(self, rejected: AccessToken) -> None:
        """Forget `rejected` (memo and Redis) unless a newer token has replaced it already."""
        if self._memo is not None and self._memo.value == rejected.value:
            self._memo = None
        await self._delete_if_same(keys=[self._cache_key], args=[rejected.value])

    async def close(self) -> None:
        for task in (self._background, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _single_flight(self) -> asyncio.Future[AccessToken]:
        task = self._inflight
        if task is None or task.done():
            task = asyncio.create_task(self._refresh(), name=f"token-refresh-{self.name}")
            self._inflight = task
        # Shielded: a caller that gives up must not cancel the refresh the others wait for.
        return asyncio.shield(task)

    def _refresh_in_background(self) -> None:
        if self._background is not None and not self._background.done():
            return
        if self._inflight is not None and not self._inflight.done():
            return

        async def refresh_ahead() -> None:
            try:
                await self._single_flight()
            except Exception as exc:
                logger.warning("refresh ahead of expiry failed for %s: %s", self.name, exc)

        self._background = asyncio.create_task(refresh_ahead(), name=f"token-refresh-ahead-{self.name}")

    async def _read_cache(self) -> AccessToken | None:
        raw: dict[Any, Any] = await self._redis.hgetall(self._cache_key)  # type: ignore[misc]
        if not raw:
            return None
        try:
            return AccessToken(
                value=bytes(raw[b"token"]).decode(),
                usable_until=float(raw[b"usable_until"]),
                refresh_at=float(raw[b"refresh_at"]),
            )
        except (KeyError, ValueError):
            return None

    async def _refresh(self) -> AccessToken:
        cached = await self._read_cache()
        if cached is not None and cached.fresh(time.time()):
            self._memo = cached
            return cached
        lock = self._redis.lock(
            self._lock_key, timeout=self._lock_timeout, sleep=0.05, blocking_timeout=self._lock_timeout + 1.0
        )
        with self._tracer.start_as_current_span("token.lock_wait", attributes={"upstream": self.name}):
            acquired = await lock.acquire()
        if not acquired:
            # The holder died without releasing; its lock expires by itself. Use what is cached.
            cached = await self._read_cache()
            if cached is not None and cached.usable(time.time()):
                self._memo = cached
                return cached
            raise PartnerUnreachable("Timed out waiting for the token refresh lock", upstream=self.name)
        try:
            # Someone else may have refreshed while we waited for the lock.
            cached = await self._read_cache()
            if cached is not None and cached.fresh(time.time()):
                self._memo = cached
                return cached
            with self._tracer.start_as_current_span("token.refresh", attributes={"upstream": self.name}):
                token = await self._request_token()
            await self._store(token)
            self._memo = token
            return token
        finally:
            with contextlib.suppress(LockError):
                await lock.release()

    async def _store(self, token: AccessToken) -> None:
        ttl_ms = max(1, int((token.usable_until - time.time()) * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._cache_key)
            pipe.hset(
                self._cache_key,
                mapping={
                    "token": token.value,
                    "usable_until": repr(token.usable_until),
                    "refresh_at": repr(token.refresh_at),
                },
            )
            pipe.pexpire(self._cache_key, ttl_ms)
            await pipe.execute()

    async def _request_token(self) -> AccessToken:
        settings = self._settings
        started = time.time()
        try:
            async with self._session.post(
                self._token_url,
                data={"grant_type": "client_credentials"},
                auth=aiohttp.BasicAuth(
                    settings.partner_client_id, settings.partner_client_secret.get_secret_value()
                ),
                timeout=aiohttp.ClientTimeout(total=settings.partner_token_timeout),
            ) as response:
                status = response.status
                content = await response.read()
        except TRANSPORT_ERRORS as exc:
            error = transport_error(exc, upstream=self.name, what=f"{self.name} token endpoint")
            TOKEN_REFRESHES.labels(
                self.name, "timeout" if isinstance(error, PartnerTimeout) else "transport_error"
            ).inc()
            raise UpstreamFailure(error) from exc
        if status >= 500:
            TOKEN_REFRESHES.labels(self.name, "server_error").inc()
            raise UpstreamFailure(
                PartnerServerError(
                    f"The partner's token endpoint answered HTTP {status}",
                    upstream=self.name,
                    partner_status=status,
                )
            )
        try:
            body = orjson.loads(content)
            value = str(body["access_token"])
            expires_in = float(body.get("expires_in", 3600))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            body, value, expires_in = None, "", 0.0
        if status != 200 or not value or expires_in <= 0:
            TOKEN_REFRESHES.labels(self.name, "rejected").inc()
            refusal = body.get("error") if isinstance(body, dict) else None
            raise PartnerAuthFailed(
                f"The partner refused to issue a token (HTTP {status})",
                upstream=self.name,
                partner_status=status,
                partner_code=str(refusal) if refusal else None,
            )
        TOKEN_REFRESHES.labels(self.name, "ok").inc()
        # Short-lived tokens (tests, odd partners) cannot afford the full margins.
        margin = min(settings.token_safety_margin, expires_in / 4)
        usable_until = started + expires_in - margin
        ahead = min(settings.token_refresh_ahead, (usable_until - started) / 2)
        logger.info("new access token for %s, expires in %ss", self.name, int(expires_in))
        return AccessToken(value=value, usable_until=usable_until, refresh_at=usable_until - ahead)
