"""The backoffice API: list and filter, detail, retry (one and bulk), edit with diffs, cancel,
replay, connectors, and the 90-day cleanup."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from app.airlock import worker as airlock_worker
from app.airlock.models import AsyncCall
from app.db import utcnow
from tests.airlock.conftest import Clock
from tests.airlock.test_delivery import Make
from tests.conftest import Running, Sandbox
from tests.support import Receiver

PURCHASE = {"product_code": "PLN50", "customer_number": "0812345678", "ref_id": "inv-9"}


async def respond_async(sluice: Running, body: dict[str, Any] | None = None, **headers: str) -> str:
    response = await sluice.client.post(
        "/v1/purchases", json=body or PURCHASE, headers=sluice.headers(Prefer="respond-async", **headers)
    )
    assert response.status_code == 202, response.text
    return response.json()["$reply_id"]  # type: ignore[no-any-return]


async def detail(sluice: Running, reply_id: str) -> dict[str, Any]:
    response = await sluice.client.get(f"/v1/async-calls/{reply_id}/detail", headers=sluice.headers())
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_list_filters_and_pages(airlock: Running, make_worker: Make) -> None:
    ids = [await respond_async(airlock) for _ in range(5)]
    await make_worker(airlock.state).run_once()  # all DONE
    more = [await respond_async(airlock) for _ in range(2)]  # CALL_RETRY
    h = airlock.headers()
    page = (await airlock.client.get("/v1/async-calls", params={"limit": 3}, headers=h)).json()
    assert [c["$reply_id"] for c in page["data"]] == list(reversed(ids + more))[:3]
    second = (
        await airlock.client.get(
            "/v1/async-calls", params={"limit": 3, "cursor": page["meta"]["next_cursor"]}, headers=h
        )
    ).json()
    assert [c["$reply_id"] for c in second["data"]] == list(reversed(ids + more))[3:6]
    pending = (await airlock.client.get("/v1/async-calls", params={"status": "CALL_RETRY"}, headers=h)).json()
    assert {c["$reply_id"] for c in pending["data"]} == set(more)
    both = (
        await airlock.client.get(
            "/v1/async-calls", params=[("status", "CALL_RETRY"), ("status", "DONE")], headers=h
        )
    ).json()
    assert len(both["data"]) == 7
    assert (await airlock.client.get("/v1/async-calls", params={"connector": "other"}, headers=h)).json()[
        "data"
    ] == []
    by_client = await airlock.client.get("/v1/async-calls", params={"client": "bootstrap"}, headers=h)
    assert len(by_client.json()["data"]) == 7
    future = (utcnow() + timedelta(hours=1)).isoformat()
    assert (await airlock.client.get("/v1/async-calls", params={"since": future}, headers=h)).json()[
        "data"
    ] == []
    naive = await airlock.client.get("/v1/async-calls", params={"since": "2026-01-01T00:00:00"}, headers=h)
    assert naive.status_code == 400
    bad_cursor = await airlock.client.get("/v1/async-calls", params={"cursor": "nope"}, headers=h)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["code"] == "bad_request"
    naive_cursor = base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.uuid4()}".encode()).decode()
    assert (
        await airlock.client.get("/v1/async-calls", params={"cursor": naive_cursor}, headers=h)
    ).status_code == 400
    bad_status = await airlock.client.get("/v1/async-calls", params={"status": "LOST"}, headers=h)
    assert bad_status.status_code == 422


async def test_detail_pretty_prints_json(airlock: Running, make_worker: Make) -> None:
    reply_id = await respond_async(airlock)
    await make_worker(airlock.state).run_once()
    call = await detail(airlock, reply_id)
    assert call["request_body"].startswith("{\n  ")
    assert call["response_body"].startswith("{\n  ")
    assert '"ref_id": "inv-9"' in call["response_body"]
    log = (await airlock.client.get(f"/v1/async-calls/{reply_id}/log", headers=airlock.headers())).json()
    assert [line["phase"] for line in log] == ["capture", "call"]
    missing = await airlock.client.get(f"/v1/async-calls/{'0' * 32}/detail", headers=airlock.headers())
    assert missing.status_code == 404


async def test_retry_one_resets_ttl_and_logs_the_author(
    airlock: Running, sandbox: Sandbox, make_worker: Make, clock: Clock
) -> None:
    await airlock.client.put("/v1/airlock/connectors/partner", json={"ttl": 1}, headers=airlock.headers())
    await sandbox.config(fail_next=10)
    reply_id = await respond_async(airlock)
    await make_worker(airlock.state).run_once()
    assert (await detail(airlock, reply_id))["status"] == "CALL_ERROR"
    await sandbox.config(fail_next=0)
    await airlock.client.put("/v1/airlock/connectors/partner", json={"ttl": 4}, headers=airlock.headers())
    retried = await airlock.client.post(f"/v1/async-calls/{reply_id}/retry", headers=airlock.headers())
    assert retried.status_code == 200, retried.text
    call = retried.json()
    assert call["status"] == "CALL_RETRY" and call["ttl"] == 4
    assert call["log"][-1]["outcome"] == "retried" and call["log"][-1]["author"] == "bootstrap admin"
    clock.advance(10)  # the connector cache of a worker lasts a few seconds
    await make_worker(airlock.state).run_once()
    assert (await detail(airlock, reply_id))["status"] == "DONE"
    # A DONE call without a reply URL cannot be retried into RESPONSE_RETRY.
    conflict = await airlock.client.post(
        f"/v1/async-calls/{reply_id}/retry", json={"phase": "RESPONSE_RETRY"}, headers=airlock.headers()
    )
    assert conflict.status_code == 409 and conflict.json()["code"] == "call_state_conflict"


async def test_bulk_retry_by_status_and_by_ids(airlock: Running, sandbox: Sandbox, make_worker: Make) -> None:
    await airlock.client.put("/v1/airlock/connectors/partner", json={"ttl": 1}, headers=airlock.headers())
    await sandbox.config(fail_next=3)
    ids = [await respond_async(airlock) for _ in range(3)]
    await make_worker(airlock.state).run_once()
    bulk = await airlock.client.post(
        "/v1/async-calls/retry",
        json={"status": "CALL_ERROR", "connector": "partner"},
        headers=airlock.headers(),
    )
    assert bulk.status_code == 200
    assert set(bulk.json()["retried"]) == set(ids) and bulk.json()["refused"] == []
    for reply_id in ids:
        assert (await detail(airlock, reply_id))["status"] == "CALL_RETRY"
    by_ids = await airlock.client.post(
        "/v1/async-calls/retry", json={"ids": ids[:1]}, headers=airlock.headers()
    )
    assert by_ids.json()["retried"] == ids[:1]
    empty = await airlock.client.post("/v1/async-calls/retry", json={}, headers=airlock.headers())
    assert empty.status_code == 422


async def test_edits_keep_a_unified_diff_with_author_and_time(
    airlock: Running, sandbox: Sandbox, make_worker: Make, receiver: Receiver
) -> None:
    # A call stuck on a bad request: the operator corrects the body, then the stored response.
    reply_id = await respond_async(airlock, {**PURCHASE, "customer_number": "TRIGGER-500"})
    await airlock.client.put("/v1/airlock/connectors/partner", json={"ttl": 1}, headers=airlock.headers())
    edited = await airlock.client.patch(
        f"/v1/async-calls/{reply_id}",
        json={"body": {**PURCHASE, "customer_number": "0811111111"}},
        headers=airlock.headers(),
    )
    assert edited.status_code == 200, edited.text
    line = edited.json()["log"][-1]
    assert line["phase"] == "edit" and line["author"] == "bootstrap admin" and line["at"]
    assert '-  "customer_number": "TRIGGER-500",' in line["detail"]
    assert '+  "customer_number": "0811111111",' in line["detail"]
    assert line["detail"].startswith("--- body (before)\n+++ body (after)\n")
    await make_worker(airlock.state).run_once()
    call = await detail(airlock, reply_id)
    assert call["status"] == "DONE" and '"customer_number": "0811111111"' in call["response_body"]
    fixed = await airlock.client.patch(
        f"/v1/async-calls/{reply_id}",
        json={"response": {"data": {"note": "corrected"}}},
        headers=airlock.headers(),
    )
    assert "corrected" in fixed.json()["log"][-1]["detail"]
    assert fixed.json()["response"]["data"] == {"data": {"note": "corrected"}}
    nothing = await airlock.client.patch(f"/v1/async-calls/{reply_id}", json={}, headers=airlock.headers())
    assert nothing.status_code == 422
    not_b64 = await airlock.client.patch(
        f"/v1/async-calls/{reply_id}", json={"body_b64": "%%%"}, headers=airlock.headers()
    )
    assert not_b64.status_code == 422


async def test_cancel_and_replay(airlock: Running, make_worker: Make, receiver: Receiver) -> None:
    pending = await respond_async(airlock)
    cancelled = await airlock.client.post(f"/v1/async-calls/{pending}/cancel", headers=airlock.headers())
    assert cancelled.json()["status"] == "CANCELLED"
    again = await airlock.client.post(f"/v1/async-calls/{pending}/cancel", headers=airlock.headers())
    assert again.status_code == 409
    assert await make_worker(airlock.state).run_once() == 0

    response = await airlock.client.post(
        "/v1/purchases",
        json={**PURCHASE, "$reply": f"{receiver.url}/r"},
        headers=airlock.headers(Prefer="respond-async"),
    )
    delivered = response.json()["$reply_id"]
    not_yet = await airlock.client.post(f"/v1/async-calls/{delivered}/replay", headers=airlock.headers())
    assert not_yet.status_code == 409
    worker = make_worker(airlock.state)
    await worker.run_once()
    replayed = await airlock.client.post(f"/v1/async-calls/{delivered}/replay", headers=airlock.headers())
    assert replayed.status_code == 200 and replayed.json()["status"] == "RESPONSE_RETRY"
    await worker.run_once()
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [delivered, delivered]
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    assert (await detail(airlock, delivered))["status"] == "DONE"


async def test_backoffice_needs_the_admin_scope(airlock: Running) -> None:
    from app.clients.service import create_client

    async with airlock.state.sessionmaker.begin() as session:
        _, key = await create_client(session, name="p", org_id="o", scopes=["partner"])
    reply_id = await respond_async(airlock)
    for method, path in [
        ("POST", f"/v1/async-calls/{reply_id}/retry"),
        ("POST", f"/v1/async-calls/{reply_id}/cancel"),
        ("POST", f"/v1/async-calls/{reply_id}/replay"),
        ("PATCH", f"/v1/async-calls/{reply_id}"),
        ("GET", "/v1/airlock/connectors"),
        ("PUT", "/v1/airlock/connectors/partner"),
    ]:
        response = await airlock.client.request(method, path, json={}, headers=airlock.headers(key))
        assert response.status_code == 403, (method, path)


async def test_connector_settings(airlock: Running) -> None:
    h = airlock.headers()
    listed = (await airlock.client.get("/v1/airlock/connectors", headers=h)).json()
    assert listed == [
        {
            "name": "partner",
            "ttl": 13,
            "delay": 30.0,
            "error_urls": [],
            "error_emails": [],
            "retries_for_seconds": 30.0 * (2**13 - 1),
            "updated_at": None,
            "updated_by": None,
        }
    ]
    put = await airlock.client.put(
        "/v1/airlock/connectors/partner",
        json={"delay": 5, "error_emails": ["ops@example.com"], "error_urls": ["http://127.0.0.1:9/errors"]},
        headers=h,
    )
    assert put.status_code == 200
    got = (await airlock.client.get("/v1/airlock/connectors/partner", headers=h)).json()
    assert got["delay"] == 5 and got["ttl"] == 13 and got["updated_by"] == "bootstrap admin"
    assert "error_secret" not in got and "secret" not in str(got)
    for bad in [{"ttl": 0}, {"delay": -1}, {"error_emails": ["nope"]}, {"unknown": 1}]:
        assert (
            await airlock.client.put("/v1/airlock/connectors/partner", json=bad, headers=h)
        ).status_code == 422, bad
    ssrf = await airlock.client.put(
        "/v1/airlock/connectors/partner", json={"error_urls": ["http://169.254.169.254/"]}, headers=h
    )
    assert ssrf.status_code == 422 and ssrf.json()["code"] == "invalid_reply_url"
    # New calls take the connector's values.
    reply_id = await respond_async(airlock)
    assert (await detail(airlock, reply_id))["ttl"] == 13


async def test_cleanup_deletes_finished_calls_past_the_retention(airlock: Running, make_worker: Make) -> None:
    old_done, recent_done = await respond_async(airlock), await respond_async(airlock)
    pending = await respond_async(airlock, {**PURCHASE, "customer_number": "TRIGGER-503"})
    await make_worker(airlock.state).run_once()
    async with airlock.state.sessionmaker.begin() as session:
        await session.execute(
            update(AsyncCall)
            .where(AsyncCall.id == old_done)
            .values(finished_at=utcnow() - timedelta(days=91))
        )
        await session.execute(
            update(AsyncCall).where(AsyncCall.id == pending).values(created_at=utcnow() - timedelta(days=200))
        )
    assert await airlock_worker.purge(airlock.state, batch=1) == 1
    assert (
        await airlock.client.get(f"/v1/async-calls/{old_done}", headers=airlock.headers())
    ).status_code == 404
    assert (
        await airlock.client.get(f"/v1/async-calls/{recent_done}", headers=airlock.headers())
    ).status_code == 200
    assert (
        await airlock.client.get(f"/v1/async-calls/{pending}", headers=airlock.headers())
    ).status_code == 200


async def test_concurrent_first_writes_of_a_connector_all_succeed(airlock: Running) -> None:
    """The row is created once (no key collision, no 500); the last writer's values stay."""
    name = f"conn-{uuid.uuid4().hex[:8]}"
    answers = await asyncio.gather(
        *(
            airlock.client.put(
                f"/v1/airlock/connectors/{name}", json={"ttl": 5 + i}, headers=airlock.headers()
            )
            for i in range(8)
        )
    )
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers if a.status_code != 200]
    got = (await airlock.client.get(f"/v1/airlock/connectors/{name}", headers=airlock.headers())).json()
    assert got["ttl"] in range(5, 13)
