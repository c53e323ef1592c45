"""The notifier against real receiver servers on loopback (no mocks of our code)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.notify import ErrorEvent, Notifier
from app.settings import Settings
from tests.support import Receiver, eventually, free_port, receiver_server

DD_KEY = "dd-key-123"
NR_KEY = "nr-key-456"


def _settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        notify_slack_webhook_url=f"{url}/slack",
        notify_datadog_url=f"{url}/api/v1/events",
        notify_datadog_api_key=DD_KEY,
        notify_newrelic_url=url + "/v1/accounts/{account_id}/events",
        notify_newrelic_account_id="777",
        notify_newrelic_api_key=NR_KEY,
        notify_dedup_window=60,
        instance_name="sluice-t",
        environment="test",
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _only(target: str, url: str, **overrides: Any) -> Settings:
    """Settings with one target configured (slack, datadog or newrelic)."""
    off: dict[str, Any] = {
        "slack": {"notify_datadog_api_key": None, "notify_newrelic_api_key": None},
        "datadog": {"notify_slack_webhook_url": None, "notify_newrelic_api_key": None},
        "newrelic": {"notify_slack_webhook_url": None, "notify_datadog_api_key": None},
    }[target]
    return _settings(url, **{**off, **overrides})


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
        partner_message="boom <b> & co",
        upstream="partner",
        occurred_at=datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
    )
    values.update(overrides)
    return ErrorEvent(**values)


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _sent(target: str, outcome: str) -> float:
    return _count("sluice_notify_sent_total", target=target, outcome=outcome)


def _suppressed(reason: str) -> float:
    return _count("sluice_notify_suppressed_total", reason=reason)


async def test_each_vendor_gets_its_exact_shape(receiver: Receiver) -> None:
    notifier = Notifier(_settings(receiver.url))
    assert notifier.enabled and notifier.target_names == ["slack", "datadog", "newrelic"]
    await notifier.start()
    assert notifier.notify(_event())
    await notifier.stop()
    by_path = {r["path"]: r for r in receiver.requests}
    assert set(by_path) == {"/slack", "/api/v1/events", "/v1/accounts/777/events"}
    # The receiver routes POST only: anything recorded was a POST.
    assert all(r["headers"]["Content-Type"] == "application/json" for r in receiver.requests)
    title = "[sluice/sluice-t/test] 502 partner_error on GET /v1/products"

    slack = by_path["/slack"]["json"]
    assert set(slack) == {"text", "blocks"}
    assert slack["text"] == title
    assert all(block["type"] == "section" for block in slack["blocks"])
    fields = [f for block in slack["blocks"] for f in block.get("fields", [])]
    assert fields and all(f["type"] == "mrkdwn" for f in fields) and len(fields) <= 10
    texts = " ".join(f["text"] for f in fields)
    for expected in ("rid-1", "shop-1", "X99", "ab" * 16, "2024-05-01T12:00:00+00:00"):
        assert expected in texts
    assert "boom &lt;b&gt; &amp; co" in texts  # Slack's control characters escaped

    datadog = by_path["/api/v1/events"]
    assert datadog["headers"]["DD-API-KEY"] == DD_KEY
    body = datadog["json"]
    assert set(body) == {
        "title",
        "text",
        "alert_type",
        "priority",
        "source_type_name",
        "aggregation_key",
        "tags",
    }
    assert body["title"] == title and len(body["title"]) <= 100 and len(body["text"]) <= 4000
    assert body["alert_type"] == "error" and body["priority"] == "normal"
    assert body["source_type_name"] == "sluice"
    assert body["aggregation_key"] == _event().fingerprint
    assert "rid-1" in body["text"] and "X99" in body["text"] and "boom" in body["text"]
    expected_tags = {"service:sluice", "env:test", "instance:sluice-t", "code:partner_error", "status:502"}
    assert expected_tags <= set(body["tags"])

    newrelic = by_path["/v1/accounts/777/events"]
    assert newrelic["headers"]["Api-Key"] == NR_KEY
    assert isinstance(newrelic["json"], list) and len(newrelic["json"]) == 1
    event = newrelic["json"][0]
    assert event == {
        "eventType": "SluiceError",
        "code": "partner_error",
        "status": 502,
        "title": "The partner answered with an error",
        "detail": "The partner answered HTTP 500",
        "method": "GET",
        "path": "/v1/products",
        "clientId": "shop-1",
        "requestId": "rid-1",
        "traceId": "ab" * 16,
        "partnerCode": "X99",
        "partnerMessage": "boom <b> & co",
        "upstream": "partner",
        "instance": "sluice-t",
        "environment": "test",
        "fingerprint": _event().fingerprint,
        "suppressed": 0,
        "timestamp": int(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()),
    }


async def test_new_relic_leaves_out_unknown_values_and_slack_title_without_request(
    receiver: Receiver,
) -> None:
    notifier = Notifier(_settings(receiver.url, notify_datadog_api_key=None))
    await notifier.start()
    notifier.notify(ErrorEvent(code="breaker_state_change", status=0, title="Circuit breaker partner"))
    await notifier.stop()
    by_path = {r["path"]: r["json"] for r in receiver.requests}
    [event] = by_path["/v1/accounts/777/events"]
    assert "detail" not in event and "method" not in event and "partnerCode" not in event
    assert event["status"] == 0 and isinstance(event["timestamp"], int)
    assert by_path["/slack"]["text"] == "[sluice/sluice-t/test] breaker_state_change"


def test_fingerprint_ignores_ids_and_time() -> None:
    base = _event().fingerprint
    assert _event(request_id="other", trace_id="cd" * 16, client_id="x").fingerprint == base
    assert _event(occurred_at=datetime.now(UTC), detail="other detail").fingerprint == base
    for change in (
        {"code": "x"},
        {"status": 503},
        {"path": "/v1/x"},
        {"partner_code": "Y"},
        {"upstream": "u"},
    ):
        assert _event(**change).fingerprint != base


async def test_notify_returns_before_any_receiver_answers(receiver: Receiver) -> None:
    receiver.hanging = True
    notifier = Notifier(_settings(receiver.url, notify_timeout=30))
    await notifier.start()
    ok_before = _sent("slack", "ok")
    assert notifier.notify(_event())
    # notify() is back while nothing has even reached the receivers yet ...
    assert receiver.requests == []
    # ... and the requests, once they arrive, stay unanswered: the caller never waited on them.
    await eventually(lambda: len(receiver.requests) == 3)
    assert _sent("slack", "ok") == ok_before
    receiver.release.set()
    await notifier.stop(drain_timeout=5)
    assert _sent("slack", "ok") == ok_before + 1


async def test_hanging_target_times_out_and_is_counted(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.hanging = True
    notifier = Notifier(_only("newrelic", receiver.url, notify_timeout=0.2))
    errors_before = _sent("newrelic", "error")
    with caplog.at_level(logging.WARNING, logger="sluice.notify"):
        await notifier.start()
        notifier.notify(_event())
        await eventually(lambda: _sent("newrelic", "error") == errors_before + 1)
        await notifier.stop()
    assert "Timeout" in caplog.text and "newrelic" in caplog.text


async def test_stop_is_bounded_when_a_target_hangs(receiver: Receiver) -> None:
    receiver.hanging = True
    notifier = Notifier(_only("slack", receiver.url, notify_timeout=30))
    await notifier.start()
    notifier.notify(_event())
    await eventually(lambda: receiver.requests)
    # The send would wait 30 s; stop() gives up after its drain timeout instead.
    await asyncio.wait_for(notifier.stop(drain_timeout=0.2), timeout=5)


async def test_duplicates_are_suppressed_and_counted(receiver: Receiver) -> None:
    notifier = Notifier(_settings(receiver.url, notify_dedup_window=0.2, notify_datadog_api_key=None))
    duplicates_before = _suppressed("duplicate")
    await notifier.start()
    assert notifier.notify(_event())
    assert not notifier.notify(_event(request_id="rid-2"))
    assert not notifier.notify(_event(request_id="rid-3"))
    assert notifier.notify(_event(code="circuit_open", status=503))  # another fingerprint
    assert _suppressed("duplicate") == duplicates_before + 2
    await asyncio.sleep(0.25)
    assert notifier.notify(_event(request_id="rid-4"))
    assert not notifier.notify(_event(request_id="rid-5"))  # a new window started
    await notifier.stop()
    slack = [r["json"] for r in receiver.requests if r["path"] == "/slack"]
    newrelic = [r["json"][0] for r in receiver.requests if r["path"] != "/slack"]
    assert len(slack) == len(newrelic) == 3
    assert [e["suppressed"] for e in newrelic] == [0, 0, 2]
    assert newrelic[-1]["requestId"] == "rid-4"
    assert "… and 2 similar errors suppressed" in slack[-1]["text"]
    assert "2 similar errors suppressed" not in str(slack[0])


async def test_dedup_map_forgets_expired_fingerprints() -> None:
    notifier = Notifier(_settings("http://127.0.0.1:9", notify_dedup_window=0.05))
    for i in range(20):  # never started: the queue only fills
        notifier.notify(_event(code=f"c{i}"))
    notifier.notify(_event(code="dup"))
    notifier.notify(_event(code="dup"))  # suppressed: its entry holds a count to report later
    assert len(notifier._seen) == 21
    await asyncio.sleep(1.05)  # past the window and the sweep interval
    notifier.notify(_event(code="fresh"))
    assert set(notifier._seen) == {_event(code="dup").fingerprint, _event(code="fresh").fingerprint}


async def test_queue_full_drops_and_counts(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(_only("slack", receiver.url, notify_queue_size=2))
    full_before = _suppressed("queue_full")
    with caplog.at_level(logging.WARNING, logger="sluice.notify"):
        # Not started yet: nothing drains the queue.
        assert notifier.notify(_event(code="a"))
        assert notifier.notify(_event(code="b"))
        assert not notifier.notify(_event(code="c"))
        assert not notifier.notify(_event(code="d"))
    assert _suppressed("queue_full") == full_before + 2
    assert caplog.text.count("queue full") == 1  # one warning per overflow, not per event
    await notifier.start()
    await eventually(lambda: len(receiver.requests) == 2)
    # A dropped event was not remembered as sent: it is queued when it happens again.
    assert notifier.notify(_event(code="c"))
    await notifier.stop()
    texts = [r["json"]["text"] for r in receiver.requests]
    assert [code for code in "abcd" if any(f" {code} on " in t for t in texts)] == ["a", "b", "c"]


async def test_failing_targets_are_logged_and_counted_others_still_receive(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with receiver_server() as failing:
        failing.fail = True
        slack_url = f"{failing.url}/services/T0001/B0002/secret-webhook-token"
        settings = _settings(
            receiver.url,
            notify_slack_webhook_url=slack_url,
            notify_datadog_url=f"{dead}/api/v1/events",
        )
        before = {t: (_sent(t, "ok"), _sent(t, "error")) for t in ("slack", "datadog", "newrelic")}
        notifier = Notifier(settings)
        with caplog.at_level(logging.DEBUG):
            await notifier.start()
            assert notifier.notify(_event())
            await notifier.stop()
    assert [r["path"] for r in receiver.requests] == ["/v1/accounts/777/events"]
    assert len(failing.requests) == 1
    assert _sent("slack", "error") == before["slack"][1] + 1
    assert _sent("datadog", "error") == before["datadog"][1] + 1
    assert _sent("newrelic", "ok") == before["newrelic"][0] + 1
    warnings = [r for r in caplog.records if r.name == "sluice.notify" and r.levelno == logging.WARNING]
    text = " ".join(r.getMessage() for r in warnings)
    assert "slack failed: HTTP 500" in text
    assert "datadog failed: ConnectError" in text
    # API keys travel in headers, which no logger (ours, httpx's, httpcore's) writes out.
    everything = " ".join(r.getMessage() for r in caplog.records) + caplog.text
    assert DD_KEY not in everything and NR_KEY not in everything
    # The Slack webhook URL is a credential too; ours never logs it (httpx's INFO line of
    # every request does, which is why the app sets the httpx logger to WARNING).
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("sluice"))
    assert "secret-webhook-token" not in ours


async def test_notify_from_another_thread(receiver: Receiver) -> None:
    notifier = Notifier(_only("slack", receiver.url))
    await notifier.start()
    # A sync library callback running in a worker thread, not on the event loop.
    assert await asyncio.to_thread(notifier.notify, _event())
    await eventually(lambda: receiver.requests)
    await notifier.stop()


async def test_stop_drains_the_queue(receiver: Receiver) -> None:
    notifier = Notifier(_only("datadog", receiver.url))
    await notifier.start()
    for i in range(10):
        assert notifier.notify(_event(code=f"code-{i}"))
    await notifier.stop()
    assert len(receiver.requests) == 10


async def test_disabled_without_targets() -> None:
    notifier = Notifier(Settings(_env_file=None))  # type: ignore[call-arg]
    disabled_before = _suppressed("disabled")
    assert not notifier.enabled
    await notifier.start()
    assert not notifier.notify(_event())
    await notifier.stop()
    assert _suppressed("disabled") == disabled_before + 1


def test_partial_credentials_do_not_enable_a_target() -> None:
    url = "http://127.0.0.1:9"
    assert Notifier(_only("datadog", url, notify_datadog_api_key=None)).target_names == []
    assert Notifier(_only("newrelic", url, notify_newrelic_account_id=None)).target_names == []
    assert Notifier(_only("newrelic", url, notify_newrelic_api_key=None)).target_names == []
    assert Notifier(_only("slack", url, notify_slack_webhook_url="")).target_names == []
