"""Server-side failures reach the configured notification targets (seed node S2), end to end."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Sandbox
from tests.support import Receiver, eventually


async def test_partner_failure_is_notified_to_every_target(
    start_app: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    recv, url = receiver, receiver.url
    async with start_app(
        notify_slack_webhook_url=f"{url}/slack",
        notify_datadog_url=f"{url}/api/v1/events",
        notify_datadog_api_key="dd-secret-key",
        notify_newrelic_url=url + "/v1/accounts/{account_id}/events",
        notify_newrelic_account_id="4242",
        notify_newrelic_api_key="nr-secret-key",
        notify_dedup_window=60,
    ) as sluice:
        for _ in range(3):  # the same failure three times: one notification per target
            response = await sluice.client.get(
                "/v1/products", params={"product_code": "TRIGGER-500"}, headers=sluice.headers()
            )
            assert response.status_code == 502
        await eventually(lambda: len(recv.requests) >= 3)
        await asyncio.sleep(0.2)
    paths = sorted(r["path"] for r in recv.requests)
    assert paths == ["/api/v1/events", "/slack", "/v1/accounts/4242/events"]
    datadog = next(r for r in recv.requests if r["path"] == "/api/v1/events")
    assert datadog["headers"]["DD-API-KEY"] == "dd-secret-key"
    assert "partner_error" in datadog["json"]["title"]
    newrelic = next(r for r in recv.requests if r["path"].startswith("/v1/accounts"))
    assert newrelic["headers"]["Api-Key"] == "nr-secret-key"
    assert newrelic["json"][0]["code"] == "partner_error"


async def test_business_errors_are_not_notified(start_app: Any, sandbox: Sandbox, receiver: Receiver) -> None:
    recv, url = receiver, receiver.url
    async with start_app(notify_slack_webhook_url=f"{url}/slack") as sluice:
        response = await sluice.client.get(
            "/v1/products", params={"product_code": "TRIGGER-U01"}, headers=sluice.headers()
        )
        assert response.status_code == 422
        await asyncio.sleep(0.3)
    assert recv.requests == []


async def test_breaker_opening_is_notified(start_app: Any, sandbox: Sandbox, receiver: Receiver) -> None:
    recv, url = receiver, receiver.url
    async with start_app(notify_slack_webhook_url=f"{url}/slack", breaker_fail_max=2) as sluice:
        for _ in range(3):
            await sluice.client.get(
                "/v1/products", params={"product_code": "TRIGGER-503"}, headers=sluice.headers()
            )

        def texts() -> str:
            return " ".join(str(r["json"]) for r in recv.requests)

        await eventually(lambda: "breaker_open" in texts() and "circuit_open" in texts())


async def test_unexpected_errors_are_logged_and_notified(
    start_app: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    async with start_app(notify_slack_webhook_url=f"{receiver.url}/slack") as sluice:
        # A partner client that breaks in an unforeseen way (a bug, not a partner failure).
        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug in the client")

        sluice.state.partner.request = broken  # type: ignore[method-assign]
        response = await sluice.client.get("/v1/products", headers=sluice.headers(**{"X-Client-ID": "bug-1"}))
        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"
        assert "bug in the client" not in response.text
        await eventually(lambda: receiver.requests)
    assert "internal_error" in receiver.requests[0]["json"]["text"]
