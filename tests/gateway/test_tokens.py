"""Access tokens: cached in Redis with a TTL, single-flight, 401 retry-once, safe invalidation."""

from __future__ import annotations

import asyncio
import time

from app.upstream.tokens import AccessToken
from tests.conftest import Running, Sandbox


async def test_token_is_cached_in_redis_with_margin(sluice: Running, sandbox: Sandbox) -> None:
    for _ in range(3):
        assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200
    assert await sandbox.tokens_issued() == 1
    ttl_ms = await sluice.state.redis.pttl(sluice.state.settings.redis_key_prefix + "token:partner")
    # Sandbox tokens live 3600 s; the cache keeps them 3600 - 30 s (safety margin).
    assert 3500_000 < ttl_ms <= 3570_000


async def test_concurrent_cold_start_single_request_in_process(sluice: Running, sandbox: Sandbox) -> None:
    await sandbox.config(token_delay_ms=200)
    responses = await asyncio.gather(
        *(sluice.client.get("/v1/products", headers=sluice.headers()) for _ in range(50))
    )
    assert all(r.status_code == 200 for r in responses)
    assert await sandbox.tokens_issued() == 1


async def test_401_refreshes_and_retries_once(sluice: Running, sandbox: Sandbox) -> None:
    assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200
    await sandbox.revoke_tokens()
    response = await sluice.client.get("/v1/products", headers=sluice.headers())
    assert response.status_code == 200
    assert await sandbox.tokens_issued() == 2


async def test_persistent_401_is_partner_auth_failed(sluice: Running, sandbox: Sandbox) -> None:
    response = await sluice.client.get(
        "/v1/products", params={"product_code": "TRIGGER-401"}, headers=sluice.headers()
    )
    assert response.status_code == 502
    assert response.json()["code"] == "partner_auth_failed"
    # Exactly one retry: the first token and one replacement.
    assert await sandbox.tokens_issued() == 2
    requests = (await sandbox.stats())["requests"]
    assert sum(v for k, v in requests.items() if "product-list" in k) == 2


async def test_invalidate_never_deletes_a_newer_token(sluice: Running, sandbox: Sandbox) -> None:
    tokens = sluice.state.partner.tokens
    old = await tokens.get()
    # Another process has meanwhile replaced the token in Redis.
    newer = AccessToken("newer-token", time.time() + 600, time.time() + 500)
    await tokens._store(newer)
    await tokens.invalidate(old)
    cached = await tokens._read_cache()
    assert cached is not None and cached.value == "newer-token"
    # Invalidating the current one does delete it.
    await tokens.invalidate(newer)
    assert await tokens._read_cache() is None


async def test_refresh_ahead_of_expiry(sluice: Running, sandbox: Sandbox) -> None:
    await sandbox.config(token_ttl=4)
    # 4 s tokens: usable for 3 s (margin capped to a quarter), refreshed from 1.5 s on.
    assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200
    first = (await sluice.state.partner.tokens.get()).value
    await asyncio.sleep(1.7)
    assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200

    async def refreshed() -> bool:
        return await sandbox.tokens_issued() == 2

    from tests.support import eventually

    await eventually(refreshed, timeout=3)
    assert (await sluice.state.partner.tokens.get()).value != first


async def test_token_endpoint_refusal_is_partner_auth_failed(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    async with start_app(partner_client_secret="wrong") as sluice:
        response = await sluice.client.get("/v1/products", headers=sluice.headers())
    assert response.status_code == 502
    assert response.json()["code"] == "partner_auth_failed"
    assert "wrong" not in response.text
