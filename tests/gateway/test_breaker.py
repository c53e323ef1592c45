"""Circuit breaker: opening, fast-fail while open, a single half-open trial, recovery."""

from __future__ import annotations

import asyncio

from tests.conftest import Sandbox

FAIL = {"product_code": "TRIGGER-500"}


async def _partner_calls(sandbox: Sandbox) -> int:
    requests = (await sandbox.stats())["requests"]
    return sum(v for k, v in requests.items() if "/v2/" in k)


async def test_opens_after_fail_max_and_fails_fast(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    async with start_app(breaker_fail_max=3, breaker_reset_timeout=30) as sluice:
        for _ in range(3):
            response = await sluice.client.get("/v1/products", params=FAIL, headers=sluice.headers())
            # The call that trips the breaker still answers the partner's own error.
            assert response.status_code == 502
            assert response.json()["code"] == "partner_error"
        assert sluice.state.partner.breaker.state == "open"
        before = await _partner_calls(sandbox)

        response = await sluice.client.get("/v1/products", headers=sluice.headers())
        assert response.status_code == 503
        assert response.json()["code"] == "circuit_open"
        assert 1 <= int(response.headers["retry-after"]) <= 30
        assert await _partner_calls(sandbox) == before  # answered without touching the partner

        ready = (await sluice.client.get("/health/ready")).json()
        assert ready["breakers"]["partner"] == "open"
        metrics = (await sluice.client.get("/metrics", headers=sluice.headers())).text
        assert 'sluice_breaker_state{upstream="partner"} 2.0' in metrics


async def test_business_errors_do_not_open_it(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    async with start_app(breaker_fail_max=2) as sluice:
        for _ in range(4):
            response = await sluice.client.get(
                "/v1/products", params={"product_code": "TRIGGER-P01"}, headers=sluice.headers()
            )
            assert response.status_code == 403
        assert sluice.state.partner.breaker.state == "closed"


async def test_half_open_admits_one_trial_then_recovers(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    async with start_app(breaker_fail_max=2, breaker_reset_timeout=0.5) as sluice:
        for _ in range(2):
            await sluice.client.get("/v1/products", params=FAIL, headers=sluice.headers())
        assert sluice.state.partner.breaker.state == "open"
        await asyncio.sleep(0.6)
        assert sluice.state.partner.breaker.state == "half_open"
        before = await _partner_calls(sandbox)

        # Five callers at once: one slow trial reaches the partner, the others fail fast.
        slow = {"product_code": "TRIGGER-SLOW-400"}
        responses = await asyncio.gather(
            *(sluice.client.get("/v1/products", params=slow, headers=sluice.headers()) for _ in range(5))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 503, 503, 503, 503], statuses
        assert await _partner_calls(sandbox) == before + 1
        assert sluice.state.partner.breaker.state == "closed"
        assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200


async def test_failed_trial_reopens(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    async with start_app(breaker_fail_max=2, breaker_reset_timeout=0.3) as sluice:
        for _ in range(2):
            await sluice.client.get("/v1/products", params=FAIL, headers=sluice.headers())
        await asyncio.sleep(0.4)
        response = await sluice.client.get("/v1/products", params=FAIL, headers=sluice.headers())
        assert response.status_code == 502  # the trial's own error
        assert sluice.state.partner.breaker.state == "open"
        assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 503


async def test_timeouts_and_fail_next_count_as_failures(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    await sandbox.config(fail_next=2, fail_status=503)
    async with start_app(breaker_fail_max=2) as sluice:
        for _ in range(2):
            assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 502
        assert sluice.state.partner.breaker.state == "open"
