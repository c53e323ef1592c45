"""Delivery: replays, signed replies, backoff, ttl exhaustion, 410, Retry-After, leases.

The worker is driven by hand with an injectable clock: no test sleeps through a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from standardwebhooks.webhooks import Webhook

from app.airlock.worker import DeliveryWorker
from app.state import AppState
from tests.airlock.conftest import AIRLOCK_SETTINGS, Clock
from tests.conftest import Running, Sandbox
from tests.support import Receiver, free_port

PURCHASE = {"product_code": "PLN50", "customer_number": "0812345678", "ref_id": "inv-7"}
Make = Callable[[AppState], DeliveryWorker]


async def call_status(sluice: Running, reply_id: str) -> dict[str, Any]:
    response = await sluice.client.get(f"/v1/async-calls/{reply_id}/detail", headers=sluice.headers())
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def new_secret(sluice: Running) -> str:
    response = await sluice.client.post("/v1/webhook-secrets", headers=sluice.headers())
    assert response.status_code == 201, response.text
    return response.json()["secret"]  # type: ignore[no-any-return]


async def capture_failed_purchase(sluice: Running, sandbox: Sandbox, reply_url: str) -> str:
    await sandbox.config(fail_next=1, fail_status=503)
    response = await sluice.client.post(
        "/v1/purchases", json={**PURCHASE, "$reply": reply_url}, headers=sluice.headers()
    )
    assert response.status_code == 202, response.text
    return response.json()["$reply_id"]  # type: ignore[no-any-return]


async def test_failed_call_is_retried_and_its_reply_delivered_signed(
    airlock: Running, sandbox: Sandbox, receiver: Receiver, make_worker: Make, clock: Clock
) -> None:
    secret = await new_secret(airlock)
    reply_id = await capture_failed_purchase(airlock, sandbox, f"{receiver.url}/replies")
    worker = make_worker(airlock.state)
    assert await worker.run_once() == 0  # not due before its delay
    clock.advance(31)
    assert await worker.run_once() == 1
    [reply] = receiver.requests
    # A Standard Webhooks receiver accepts it (the library checks the signature and timestamp).
    payload = Webhook(secret).verify(reply["body"], reply["headers"])
    assert reply["headers"]["webhook-id"] == reply_id
    assert payload["$reply_id"] == reply_id
    assert payload["status"] == 201
    assert payload["content_type"] == "application/json"
    assert payload["data"]["data"]["ref_id"] == "inv-7"
    assert "b64_body" not in payload
    call = await call_status(airlock, reply_id)
    assert call["status"] == "DONE" and call["attempts"] == 2 and call["finished_at"]
    assert [(line["phase"], line["outcome"]) for line in call["log"]] == [
        ("capture", "accepted"),
        ("call", "ok"),
        ("reply", "ok"),
    ]
    assert call["log"][1]["http_status"] == 201 and call["log"][2]["http_status"] == 202
    polled = (await airlock.client.get(f"/v1/async-calls/{reply_id}", headers=airlock.headers())).json()
    assert polled["response"]["status"] == 201 and polled["response"]["data"]["data"]["ref_id"] == "inv-7"


async def test_respond_async_without_reply_is_done_and_polled(airlock: Running, make_worker: Make) -> None:
    response = await airlock.client.post(
        "/v1/purchases", json=PURCHASE, headers=airlock.headers(Prefer="respond-async")
    )
    reply_id = response.json()["$reply_id"]
    assert await make_worker(airlock.state).run_once() == 1
    polled = (await airlock.client.get(response.headers["location"], headers=airlock.headers())).json()
    assert polled["status"] == "DONE" and polled["next_try"] is None
    assert polled["response"]["status"] == 201
    assert polled["$reply_id"] == reply_id


async def test_business_error_in_the_background_is_the_final_answer(
    airlock: Running, receiver: Receiver, make_worker: Make
) -> None:
    body = {**PURCHASE, "customer_number": "TRIGGER-U02", "$reply": f"{receiver.url}/r"}
    response = await airlock.client.post(
        "/v1/purchases", json=body, headers=airlock.headers(Prefer="respond-async")
    )
    assert response.status_code == 202
    await make_worker(airlock.state).run_once()
    [reply] = receiver.requests
    assert reply["json"]["status"] == 422
    assert reply["json"]["content_type"] == "application/problem+json"
    assert reply["json"]["data"]["code"] == "bill_not_valid"
    assert (await call_status(airlock, response.json()["$reply_id"]))["status"] == "DONE"


async def test_backoff_doubles_and_call_error_when_ttl_runs_out(
    airlock: Running, sandbox: Sandbox, receiver: Receiver, make_worker: Make, clock: Clock
) -> None:
    put = await airlock.client.put(
        "/v1/airlock/connectors/partner", json={"ttl": 3, "delay": 10}, headers=airlock.headers()
    )
    assert put.status_code == 200 and put.json()["retries_for_seconds"] == 70
    reply_id = await capture_failed_purchase(airlock, sandbox, f"{receiver.url}/r")
    await sandbox.config(fail_next=100, fail_status=500)
    worker = make_worker(airlock.state)
    waits = []
    for _ in range(3):
        call = await call_status(airlock, reply_id)
        assert call["status"] == "CALL_RETRY"
        from datetime import datetime

        waits.append(round((datetime.fromisoformat(call["next_try"]) - clock.now).total_seconds()))
        clock.set(datetime.fromisoformat(call["next_try"]))
        assert await worker.run_once() == 1
    call = await call_status(airlock, reply_id)
    assert call["status"] == "CALL_ERROR" and call["ttl"] == 0 and call["attempts"] == 3
    assert waits == [10, 20, 40]
    assert [line["outcome"] for line in call["log"]] == ["accepted", "retry", "retry", "error"]
    assert all(line["http_status"] == 502 for line in call["log"][1:])
    assert receiver.requests == []  # nothing to reply: the call never got an answer
    assert await worker.run_once() == 0


async def test_response_error_when_the_reply_keeps_failing(
    airlock: Running, receiver: Receiver, make_worker: Make, clock: Clock
) -> None:
    await airlock.client.put(
        "/v1/airlock/connectors/partner", json={"ttl": 2, "delay": 5}, headers=airlock.headers()
    )
    receiver.fail = True
    response = await airlock.client.post(
        "/v1/purchases",
        json={**PURCHASE, "$reply": f"{receiver.url}/r"},
        headers=airlock.headers(Prefer="respond-async"),
    )
    reply_id = response.json()["$reply_id"]
    worker = make_worker(airlock.state)
    await worker.run_once()
    call = await call_status(airlock, reply_id)
    assert call["status"] == "RESPONSE_RETRY" and call["ttl"] == 1
    clock.advance(5)
    await worker.run_once()
    call = await call_status(airlock, reply_id)
    assert call["status"] == "RESPONSE_ERROR"
    assert len(receiver.requests) == 2
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {reply_id}  # stable across retries
    assert [line["phase"] for line in call["log"]] == ["capture", "call", "reply", "reply"]
    assert call["response"]["status"] == 201  # the answer is kept: an operator can still deliver it


async def test_gone_stops_retries(airlock: Running, receiver: Receiver, make_worker: Make) -> None:
    receiver.script = [(410, {})]
    response = await airlock.client.post(
        "/v1/purchases",
        json={**PURCHASE, "$reply": f"{receiver.url}/r"},
        headers=airlock.headers(Prefer="respond-async"),
    )
    await make_worker(airlock.state).run_once()
    call = await call_status(airlock, response.json()["$reply_id"])
    assert call["status"] == "RESPONSE_ERROR"
    assert call["log"][-1]["outcome"] == "gone" and call["log"][-1]["http_status"] == 410


async def test_retry_after_is_honoured(
    airlock: Running, receiver: Receiver, make_worker: Make, clock: Clock
) -> None:
    receiver.script = [(503, {"Retry-After": "120"})]
    response = await airlock.client.post(
        "/v1/purchases",
        json={**PURCHASE, "$reply": f"{receiver.url}/r"},
        headers=airlock.headers(Prefer="respond-async"),
    )
    worker = make_worker(airlock.state)
    await worker.run_once()
    from datetime import datetime

    call = await call_status(airlock, response.json()["$reply_id"])
    assert call["status"] == "RESPONSE_RETRY"
    assert (datetime.fromisoformat(call["next_try"]) - clock.now).total_seconds() == pytest.approx(120, abs=1)
    clock.advance(60)
    assert await worker.run_once() == 0
    clock.advance(61)
    assert await worker.run_once() == 1
    assert (await call_status(airlock, response.json()["$reply_id"]))["status"] == "DONE"


async def test_rotation_signs_with_both_secrets(
    airlock: Running, receiver: Receiver, make_worker: Make
) -> None:
    old = await new_secret(airlock)
    new = await new_secret(airlock)
    listed = (await airlock.client.get("/v1/webhook-secrets", headers=airlock.headers())).json()
    assert len(listed) == 2 and all("secret" not in s for s in listed)
    assert listed[1]["expires_at"] is not None and listed[0]["expires_at"] is None
    await airlock.client.post(
        "/v1/purchases",
        json={**PURCHASE, "$reply": f"{receiver.url}/r"},
        headers=airlock.headers(Prefer="respond-async"),
    )
    await make_worker(airlock.state).run_once()
    [reply] = receiver.requests
    assert len(reply["headers"]["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(reply["body"], reply["headers"])
    Webhook(new).verify(reply["body"], reply["headers"])


async def test_a_leased_call_is_not_taken_until_its_lease_runs_out(
    airlock: Running, make_worker: Make, clock: Clock
) -> None:
    await airlock.client.post("/v1/purchases", json=PURCHASE, headers=airlock.headers(Prefer="respond-async"))
    crashed, other = make_worker(airlock.state), make_worker(airlock.state)
    assert len(await crashed.claim(10)) == 1  # ... and the worker dies here
    assert await other.claim(10) == []
    clock.advance(airlock.state.settings.airlock_lease + 1)
    assert await other.run_once() == 1


async def test_an_operator_cancel_wins_over_a_worker_holding_the_call(
    airlock: Running, make_worker: Make
) -> None:
    response = await airlock.client.post(
        "/v1/purchases", json=PURCHASE, headers=airlock.headers(Prefer="respond-async")
    )
    reply_id = response.json()["$reply_id"]
    worker = make_worker(airlock.state)
    [call] = await worker.claim(10)
    cancelled = await airlock.client.post(f"/v1/async-calls/{reply_id}/cancel", headers=airlock.headers())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    await worker._run_call(call)
    await worker.flush()
    assert (await call_status(airlock, reply_id))["status"] == "CANCELLED"


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


async def test_giving_up_reports_to_error_urls_email_and_notifiers(
    start_app: Any, sandbox: Sandbox, receiver: Receiver, smtp: Any, clock: Clock
) -> None:
    controller, mailbox = smtp
    settings = {
        **AIRLOCK_SETTINGS,
        "smtp_host": "127.0.0.1",
        "smtp_port": controller.port,
        "notify_slack_webhook_url": f"{receiver.url}/slack",
    }
    async with start_app(**settings) as sluice:
        put = await sluice.client.put(
            "/v1/airlock/connectors/partner",
            json={"ttl": 1, "error_urls": [f"{receiver.url}/errors"], "error_emails": ["ops@example.com"]},
            headers=sluice.headers(),
        )
        assert put.status_code == 200, put.text
        secret = (
            await sluice.client.post("/v1/airlock/connectors/partner/rotate-secret", headers=sluice.headers())
        ).json()["secret"]
        reply_id = await capture_failed_purchase(sluice, sandbox, f"{receiver.url}/r")
        await sandbox.config(fail_next=5)
        worker = DeliveryWorker(sluice.state, clock=clock)
        try:
            clock.advance(3600)
            await worker.run_once()
            from app.airlock import alerts

            await alerts.drain()
        finally:
            await worker.aclose()
        [report] = [r for r in receiver.requests if r["path"] == "/errors"]
        data = Webhook(secret).verify(report["body"], report["headers"])
        assert data["$reply_id"] == reply_id and data["status"] == "CALL_ERROR"
        assert [line["phase"] for line in data["log"]] == ["capture", "call"]
        assert '"ref_id": "inv-7"' in data["request"]["body"]
        [(recipients, message)] = mailbox.messages
        assert recipients == ["ops@example.com"]
        assert reply_id in message["Subject"] and "CALL_ERROR" in message["Subject"]
        text = message.get_payload()
        assert "partner_error" in text and "inv-7" in text
        await asyncio.sleep(0.2)  # the notifier sends from its own task
        slack = [r for r in receiver.requests if r["path"] == "/slack"]
        assert slack and "async_call_failed" in str(slack[0]["json"])
