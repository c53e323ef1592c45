"""The notifier against real receiver servers on loopback (no mocks of our code)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from app.notify import ErrorEvent, Notifier
from app.settings import Settings
from tests.support import Receiver, eventually, free_port


def _settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        notify_slack_webhook_url=f"{url}/slack",
        notify_datadog_url=f"{url}/api/v1/events",
        notify_datadog_api_key="dd-key-123",
        notify_newrelic_url=url + "/v1/accounts/{account_id}/events",
        notify_newrelic_account_id="777",
        notify_newrelic_api_key="nr-key-456",
        notify_dedup_window=60,
        instance_name="sluice-t",
        environment="test",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _event(**overrides: Any) -> ErrorEvent:
    values: dict[str, Any] = dict(
        code="partner_error",
        status=502,
        title="The partner answered with an error",
        detail="The partner answered HTTP 500",
        method="GET",
        path="/v1/products",
        client_id="shop-1",
        request_id="rid-1",
        trace_id="ab" * 16,
        partner_code="X99",
        partner_message="boom",
        upstream="partner",
    )
    values.update(overrides)
    return ErrorEvent(**values)


async def test_each_vendor_gets_its_exact_shape(receiver: Receiver) -> None:
    recv, url = receiver, receiver.url
    notifier = Notifier(_settings(url))
    await notifier.start()
    assert notifier.notify(_event())
    await notifier.stop()
    by_path = {r["path"]: r for r in recv.requests}
    assert set(by_path) == {"/slack", "/api/v1/events", "/v1/accounts/777/events"}

    slack = by_path["/slack"]["json"]
    assert slack["text"] == "[sluice/sluice-t/test] 502 partner_error on GET /v1/products"
    assert slack["blocks"][0]["type"] == "header"

    datadog = by_path["/api/v1/events"]
    assert datadog["headers"]["DD-API-KEY"] == "dd-key-123"
    body = datadog["json"]
    assert body["alert_type"] == "error" and body["source_type_name"] == "sluice"
    assert len(body["title"]) <= 100 and "rid-1" in body["text"]
    assert {"service:sluice", "env:test", "code:partner_error", "status:502"} <= set(body["tags"])
    assert body["aggregation_key"] == _event().fingerprint

    newrelic = by_path["/v1/accounts/777/events"]
    assert newrelic["headers"]["Api-Key"] == "nr-key-456"
    [event] = newrelic["json"]
    assert event["eventType"] == "SluiceError"
    assert event["partnerCode"] == "X99" and event["requestId"] == "rid-1" and event["status"] == 502
    assert all(not isinstance(v, dict | list) for v in event.values())


async def test_notify_never_waits_for_the_receiver(receiver: Receiver) -> None:
    recv, url = receiver, receiver.url
    recv.hanging = True
    notifier = Notifier(_settings(url, notify_timeout=0.5))
    await notifier.start()
    started = time.perf_counter()
    assert notifier.notify(_event())
    returned_after = time.perf_counter() - started
    await eventually(lambda: len(recv.requests) == 3)
    # notify() came back before any receiver answered (they are all still hanging).
    assert returned_after < 0.5
    await notifier.stop(drain_timeout=2)


async def test_duplicates_are_suppressed_and_counted(receiver: Receiver) -> None:
    recv, url = receiver, receiver.url
    notifier = Notifier(
        _settings(url, notify_dedup_window=0.3, notify_datadog_api_key=None, notify_newrelic_api_key=None)
    )
    await notifier.start()
    assert notifier.notify(_event())
    assert not notifier.notify(_event(request_id="rid-2"))
    assert not notifier.notify(_event(request_id="rid-3"))
    assert notifier.notify(_event(code="circuit_open", status=503))  # another fingerprint
    await asyncio.sleep(0.35)
    assert notifier.notify(_event(request_id="rid-4"))
    await notifier.stop()
    texts = [str(r["json"]) for r in recv.requests]
    assert len(texts) == 3
    assert "2 similar errors suppressed" in texts[-1]


async def test_queue_full_drops(receiver: Receiver) -> None:
    url = receiver.url
    notifier = Notifier(_settings(url, notify_queue_size=2, notify_dedup_window=0))
    # Not started: nothing drains the queue.
    assert notifier.notify(_event(code="a"))
    assert notifier.notify(_event(code="b"))
    assert not notifier.notify(_event(code="c"))


async def test_failing_target_is_logged_not_raised(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    recv, url = receiver, receiver.url
    recv.fail = True
    dead = f"http://127.0.0.1:{free_port()}"
    notifier = Notifier(_settings(url, notify_slack_webhook_url=f"{dead}/slack"))
    await notifier.start()
    with caplog.at_level(logging.WARNING, logger="sluice.notify"):
        notifier.notify(_event())
        await notifier.stop()
    # Datadog and New Relic still received it, although Slack is unreachable.
    assert sorted(r["path"] for r in recv.requests) == ["/api/v1/events", "/v1/accounts/777/events"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "slack" in messages and "datadog" in messages and "500" in messages
    assert "dd-key-123" not in messages and "nr-key-456" not in messages


async def test_disabled_without_targets() -> None:
    notifier = Notifier(Settings(_env_file=None))  # type: ignore[call-arg]
    assert not notifier.enabled
    await notifier.start()
    assert not notifier.notify(_event())
    await notifier.stop()


async def test_partial_credentials_do_not_enable_a_target(receiver: Receiver) -> None:
    url = receiver.url
    notifier = Notifier(
        _settings(
            url, notify_slack_webhook_url=None, notify_datadog_api_key=None, notify_newrelic_account_id=None
        )
    )
    assert notifier.target_names == []
