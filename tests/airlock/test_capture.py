"""Capture: `$reply` and `Prefer: respond-async` on the gateway, stored before the 202."""

from __future__ import annotations

from typing import Any

from tests.conftest import Running, Sandbox
from tests.support import Receiver

PURCHASE = {"product_code": "PLN50", "customer_number": "0812345678", "ref_id": "inv-1"}


async def stored(sluice: Running, reply_id: str) -> dict[str, Any]:
    response = await sluice.client.get(f"/v1/async-calls/{reply_id}/detail", headers=sluice.headers())
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_failure_with_reply_is_stored_and_answered_202(
    airlock: Running, sandbox: Sandbox, receiver: Receiver
) -> None:
    await sandbox.config(fail_next=1, fail_status=503)
    body = {**PURCHASE, "$reply": f"{receiver.url}/replies"}
    response = await airlock.client.post("/v1/purchases", json=body, headers=airlock.headers())
    assert response.status_code == 202, response.text
    reply_id = response.json()["$reply_id"]
    assert response.json() == {"$reply_id": reply_id}
    assert response.headers["location"] == f"/v1/async-calls/{reply_id}"
    # The partner never saw $reply.
    last = (await sandbox.stats())["last_request"]
    assert "$reply" not in str(last)
    call = await stored(airlock, reply_id)
    assert call["status"] == "CALL_RETRY"
    assert call["reply_url"] == f"{receiver.url}/replies"
    assert call["operation"] == "create_purchase"
    assert call["connector"] == "partner"
    assert call["method"] == "POST" and call["path"] == "/v1/purchases"
    assert call["content_type"] == "application/json"
    assert '"ref_id": "inv-1"' in call["request_body"] and "$reply" not in call["request_body"]
    assert call["ttl"] == 13
    assert (
        "x-api-key" not in call["request_headers"] and call["request_headers"]["x-client-id"] == "test-client"
    )
    [capture] = call["log"]
    assert capture["phase"] == "capture" and capture["http_status"] == 502
    assert "partner_error" in capture["error"]


async def test_business_error_with_reply_is_answered_directly(airlock: Running, receiver: Receiver) -> None:
    body = {**PURCHASE, "customer_number": "TRIGGER-U01", "$reply": f"{receiver.url}/r"}
    response = await airlock.client.post("/v1/purchases", json=body, headers=airlock.headers())
    assert response.status_code == 422
    assert response.json()["code"] == "bill_not_valid"
    listing = await airlock.client.get("/v1/async-calls", headers=airlock.headers())
    assert listing.json()["data"] == []


async def test_success_with_reply_is_answered_directly(airlock: Running, receiver: Receiver) -> None:
    body = {**PURCHASE, "$reply": f"{receiver.url}/r"}
    response = await airlock.client.post("/v1/purchases", json=body, headers=airlock.headers())
    assert response.status_code == 201
    assert response.json()["data"]["ref_id"] == "inv-1"


async def test_timeouts_and_open_breaker_are_captured(
    start_app: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    from tests.airlock.conftest import AIRLOCK_SETTINGS

    async with start_app(**AIRLOCK_SETTINGS, partner_timeout=0.3, breaker_fail_max=1) as sluice:
        body = {**PURCHASE, "customer_number": "TRIGGER-SLOW-2000", "$reply": f"{receiver.url}/r"}
        timed_out = await sluice.client.post("/v1/purchases", json=body, headers=sluice.headers())
        assert timed_out.status_code == 202
        # The breaker is open now: the next call is refused at once, and captured as well.
        open_call = await sluice.client.post(
            "/v1/purchases", json={**PURCHASE, "$reply": f"{receiver.url}/r"}, headers=sluice.headers()
        )
        assert open_call.status_code == 202
        log = (await stored(sluice, open_call.json()["$reply_id"]))["log"]
        assert "circuit_open" in log[0]["error"]


async def test_get_with_reply_in_the_query(airlock: Running, sandbox: Sandbox, receiver: Receiver) -> None:
    await sandbox.config(fail_next=1)
    response = await airlock.client.get(
        "/v1/products", params={"per_page": 5, "$reply": f"{receiver.url}/r"}, headers=airlock.headers()
    )
    assert response.status_code == 202
    call = await stored(airlock, response.json()["$reply_id"])
    assert call["query_string"] == "per_page=5"
    assert call["method"] == "GET"


async def test_prefer_respond_async_is_stored_without_calling_the_partner(
    airlock: Running, sandbox: Sandbox
) -> None:
    before = (await sandbox.stats())["requests"]
    response = await airlock.client.post(
        "/v1/purchases", json=PURCHASE, headers=airlock.headers(Prefer="respond-async, wait=10")
    )
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "respond-async"
    assert (await sandbox.stats())["requests"] == before
    call = await stored(airlock, response.json()["$reply_id"])
    assert call["status"] == "CALL_RETRY" and call["respond_async"] is True and call["reply_url"] is None
    polled = await airlock.client.get(response.headers["location"], headers=airlock.headers())
    assert polled.status_code == 200
    assert polled.json()["$reply_id"] == response.json()["$reply_id"]
    assert polled.json()["response"] is None


async def test_prefer_respond_async_still_validates_first(airlock: Running) -> None:
    response = await airlock.client.post(
        "/v1/purchases", json={"product_code": "PLN50"}, headers=airlock.headers(Prefer="respond-async")
    )
    assert response.status_code == 422
    assert (await airlock.client.get("/v1/async-calls", headers=airlock.headers())).json()["data"] == []


async def test_refused_reply_urls(airlock: Running) -> None:
    for url, reason in [
        ("ftp://example.com/x", "http or https"),
        ("http://user:pw@example.com/x", "credentials"),
        ("http://10.0.0.1/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "private"),
        ("http:///nohost", "no host"),
        ("not a url", "http or https"),
    ]:
        response = await airlock.client.post(
            "/v1/purchases", json={**PURCHASE, "$reply": url}, headers=airlock.headers()
        )
        assert response.status_code == 422, url
        assert response.json()["code"] == "invalid_reply_url"
        assert reason in response.json()["detail"], (url, response.json()["detail"])
    bad_type = await airlock.client.post(
        "/v1/purchases", json={**PURCHASE, "$reply": 5}, headers=airlock.headers()
    )
    assert bad_type.status_code == 422 and bad_type.json()["code"] == "invalid_reply_url"


async def test_callers_see_only_their_own_calls(airlock: Running) -> None:
    from app.clients.service import create_client

    async with airlock.state.sessionmaker.begin() as session:
        _, key_a = await create_client(session, name="a", org_id="o", scopes=["partner"])
        _, key_b = await create_client(session, name="b", org_id="o", scopes=["partner"])
    response = await airlock.client.post(
        "/v1/purchases", json=PURCHASE, headers=airlock.headers(key_a, Prefer="respond-async")
    )
    assert response.status_code == 202
    location = response.headers["location"]
    assert (await airlock.client.get(location, headers=airlock.headers(key_a))).status_code == 200
    other = await airlock.client.get(location, headers=airlock.headers(key_b))
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    assert (await airlock.client.get("/v1/async-calls", headers=airlock.headers(key_b))).json()["data"] == []
    assert (
        len((await airlock.client.get("/v1/async-calls", headers=airlock.headers(key_a))).json()["data"]) == 1
    )
    # The backoffice is for admins.
    detail = await airlock.client.get(f"{location}/detail", headers=airlock.headers(key_a))
    assert detail.status_code == 403
    assert (await airlock.client.get(location)).status_code == 401
