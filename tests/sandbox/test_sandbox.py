"""The sandbox partner: OAuth, the four partner endpoints, triggers and the control endpoints."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.sandbox import create_sandbox_app

ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")


@pytest.fixture
def app() -> FastAPI:
    return create_sandbox_app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


async def _token(client: httpx.AsyncClient) -> str:
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("sandbox-client", "sandbox-secret")
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
async def authed(client: httpx.AsyncClient) -> httpx.AsyncClient:
    client.headers["Authorization"] = f"Bearer {await _token(client)}"
    return client


async def _stats(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/_sandbox/stats")
    assert response.status_code == 200
    return dict(response.json())


def _assert_envelope(body: dict[str, Any], error_code: str = "") -> None:
    assert set(body) == {"header", "data"}
    header = body["header"]
    assert set(header) == {"process_time", "messages", "reason", "error_code"}
    assert isinstance(header["process_time"], float)
    assert header["error_code"] == error_code
    if error_code:
        assert body["data"] is None


# --- OAuth ----------------------------------------------------------------------------------


async def test_token_with_basic_auth(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("sandbox-client", "sandbox-secret")
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 20
    assert response.headers["cache-control"] == "no-store"


async def test_token_with_form_credentials() -> None:
    app = create_sandbox_app(client_id="acme", client_secret="s3cret", token_ttl=120)
    async with _client(app) as client:
        form = {"grant_type": "client_credentials", "client_id": "acme", "client_secret": "s3cret"}
        response = await client.post("/oauth/token", data=form)
        assert response.status_code == 200
        assert response.json()["expires_in"] == 120


@pytest.mark.parametrize(
    ("auth", "form"),
    [
        (("sandbox-client", "wrong"), {}),
        (("someone", "sandbox-secret"), {}),
        (None, {"client_id": "sandbox-client", "client_secret": "nope"}),
        (None, {}),
    ],
)
async def test_token_bad_credentials(
    client: httpx.AsyncClient, auth: tuple[str, str] | None, form: dict[str, str]
) -> None:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        auth=auth or httpx.USE_CLIENT_DEFAULT,
    )
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client"}


@pytest.mark.parametrize("form", [{"grant_type": "password"}, {}])
async def test_token_bad_grant_type(client: httpx.AsyncClient, form: dict[str, str]) -> None:
    response = await client.post("/oauth/token", data=form, auth=("sandbox-client", "sandbox-secret"))
    assert response.status_code == 400
    assert response.json() == {"error": "unsupported_grant_type"}


async def test_tokens_are_counted(client: httpx.AsyncClient) -> None:
    tokens = {await _token(client) for _ in range(3)}
    await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
    assert len(tokens) == 3
    stats = await _stats(client)
    assert stats["tokens_issued"] == 3
    assert stats["requests"]["POST /oauth/token"] == 4


async def test_bearer_token_required(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        response = await client.get("/v2/product-list", headers=headers)
        assert response.status_code == 401
        body = response.json()
        _assert_envelope(body)
        assert body["header"]["messages"] == "invalid or expired access token"
    assert (await _stats(client))["unauthorized"] == 3


async def test_token_expires_after_ttl() -> None:
    async with _client(create_sandbox_app(token_ttl=1)) as client:
        token = await _token(client)
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/v2/product-list", headers=headers)).status_code == 200
        await asyncio.sleep(1.1)
        assert (await client.get("/v2/product-list", headers=headers)).status_code == 401


async def test_token_ttl_follows_config(client: httpx.AsyncClient) -> None:
    assert (await client.post("/_sandbox/config", json={"token_ttl": 5})).json()["token_ttl"] == 5
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("sandbox-client", "sandbox-secret")
    )
    assert response.json()["expires_in"] == 5


# --- partner endpoints ------------------------------------------------------------------------


async def test_product_list(authed: httpx.AsyncClient) -> None:
    response = await authed.get("/v2/product-list")
    assert response.status_code == 200
    body = response.json()
    _assert_envelope(body)
    assert body["header"]["messages"] == "success"
    assert len(body["data"]) == 20
    first = body["data"][0]
    assert set(first) == {"product_code", "name", "category_id", "operator_id", "price", "status"}
    assert first["status"] == "active" and isinstance(first["price"], int)

    everything = (await authed.get("/v2/product-list", params={"per_page": 500})).json()["data"]
    assert 25 <= len(everything) <= 100
    page2 = (await authed.get("/v2/product-list", params={"page": 2})).json()["data"]
    assert page2 == everything[20:40]

    pulsa = (await authed.get("/v2/product-list", params={"category_id": 1, "operator_id": 1})).json()["data"]
    assert pulsa and all(p["category_id"] == 1 and p["operator_id"] == 1 for p in pulsa)
    one = (await authed.get("/v2/product-list", params={"product_code": "PLN50"})).json()["data"]
    assert [p["product_code"] for p in one] == ["PLN50"]
    assert (await authed.get("/v2/product-list", params={"product_code": "NOPE"})).json()["data"] == []


async def test_product_list_rejects_non_integer(authed: httpx.AsyncClient) -> None:
    response = await authed.get("/v2/product-list", params={"category_id": "pulsa"})
    assert response.status_code == 400
    _assert_envelope(response.json(), "P02")


async def test_inquiry(authed: httpx.AsyncClient) -> None:
    response = await authed.post("/v2/inquiry", json={"product_code": "PLN50", "customer_number": "5123"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["product_code"] == "PLN50" and data["customer_number"] == "5123"
    assert data["customer_name"] == "Sandbox Customer"
    assert data["amount"] == 52_000 and data["admin_fee"] == 2500
    assert len(data["inquiry_id"]) == 36


@pytest.mark.parametrize("path", ["/v2/inquiry", "/v2/order"])
async def test_missing_fields_and_unknown_product(authed: httpx.AsyncClient, path: str) -> None:
    response = await authed.post(path, json={"product_code": "PLN50"})
    assert response.status_code == 400
    _assert_envelope(response.json(), "P02")
    assert "customer_number" in response.json()["header"]["reason"]
    response = await authed.post(path, content=b"not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    _assert_envelope(response.json(), "P02")
    response = await authed.post(path, json={"product_code": "NOPE", "customer_number": "1"})
    assert response.status_code == 400
    _assert_envelope(response.json(), "S01")


async def test_order_create_and_get(authed: httpx.AsyncClient) -> None:
    body = {"product_code": "TSEL10", "customer_number": "0812", "ref_id": "ref-1"}
    response = await authed.post("/v2/order", json=body)
    assert response.status_code == 200
    order = response.json()["data"]
    assert order["status"] == "success" and order["ref_id"] == "ref-1" and order["amount"] == 11_500
    assert order["created_at"].endswith("+00:00")
    fetched = await authed.get(f"/v2/order/{order['order_id']}")
    assert fetched.status_code == 200
    assert fetched.json()["data"] == order
    missing = await authed.get("/v2/order/does-not-exist")
    assert missing.status_code == 404
    _assert_envelope(missing.json(), "P04")


async def test_last_request_is_recorded(authed: httpx.AsyncClient) -> None:
    headers = {"X-Language-ID": "id", "traceparent": TRACEPARENT, "X-Client-ID": "client-7"}
    await authed.post(
        "/v2/inquiry?x=1", json={"product_code": "PLN50", "customer_number": "9"}, headers=headers
    )
    stats = await _stats(authed)
    last = stats["last_request"]
    assert last["path"] == "/v2/inquiry" and last["method"] == "POST"
    assert last["query"] == {"x": "1"}
    assert last["body"] == {"product_code": "PLN50", "customer_number": "9"}
    assert last["headers"]["x-language-id"] == "id"
    assert last["headers"]["traceparent"] == TRACEPARENT
    assert last["headers"]["x-client-id"] == "client-7"
    assert last["headers"]["authorization"].startswith("Bearer ")
    assert stats["requests"]["POST /v2/inquiry"] == 1


# --- triggers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "status"),
    [
        ("P03", 403),
        ("P08", 403),
        ("U01", 400),
        ("S00", 400),
        ("X99", 400),
        ("P99", 400),
        ("500", 500),
        ("503", 503),
    ],
)
async def test_error_triggers(authed: httpx.AsyncClient, trigger: str, status: int) -> None:
    body = {"product_code": "PLN50", "customer_number": f"TRIGGER-{trigger}"}
    response = await authed.post("/v2/inquiry", json=body)
    assert response.status_code == status
    payload = response.json()
    code = "" if trigger.isdigit() else trigger
    _assert_envelope(payload, code)
    if status >= 500:
        assert payload["header"]["messages"] == "sandbox upstream failure"
    else:
        assert payload["header"]["reason"] == f"sandbox trigger {trigger}"


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/v2/product-list?product_code=TRIGGER-U02", None),
        ("POST", "/v2/inquiry", {"product_code": "PLN50", "customer_number": "TRIGGER-U02"}),
        ("POST", "/v2/order", {"product_code": "TRIGGER-U02", "customer_number": "1"}),
        ("POST", "/v2/order?note=TRIGGER-U02", {"product_code": "PLN50", "customer_number": "1"}),
        ("GET", "/v2/order/TRIGGER-U02", None),
    ],
)
async def test_triggers_work_everywhere(authed: httpx.AsyncClient, method: str, url: str, body: Any) -> None:
    response = await authed.request(method, url, json=body)
    assert response.status_code == 400
    _assert_envelope(response.json(), "U02")


async def test_trigger_401_ignores_a_valid_token(authed: httpx.AsyncClient) -> None:
    response = await authed.get("/v2/order/TRIGGER-401")
    assert response.status_code == 401
    _assert_envelope(response.json())
    assert (await authed.get("/v2/product-list")).status_code == 200


async def test_slow_trigger_answers_normally(authed: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    body = {"product_code": "TRIGGER-SLOW-250", "customer_number": "1"}
    response = await authed.post("/v2/inquiry", json=body)
    assert time.perf_counter() - started >= 0.25
    assert response.status_code == 200
    assert response.json()["data"]["amount"] == 10_000
    order = await authed.get("/v2/order/TRIGGER-SLOW-10")
    assert order.status_code == 200


async def test_triggers_are_checked_after_the_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/order/TRIGGER-P08")
    assert response.status_code == 401


# --- control endpoints ------------------------------------------------------------------------


async def test_revoke_tokens(authed: httpx.AsyncClient) -> None:
    await _token(authed)
    assert (await authed.get("/v2/product-list")).status_code == 200
    assert (await authed.post("/_sandbox/revoke-tokens")).json() == {"revoked": 2}
    assert (await authed.get("/v2/product-list")).status_code == 401
    authed.headers["Authorization"] = f"Bearer {await _token(authed)}"
    assert (await authed.get("/v2/product-list")).status_code == 200


async def test_fail_next(authed: httpx.AsyncClient) -> None:
    config = (await authed.post("/_sandbox/config", json={"fail_next": 2})).json()
    assert config["fail_next"] == 2 and config["fail_status"] == 503
    for _ in range(2):
        response = await authed.get("/v2/product-list")
        assert response.status_code == 503
        _assert_envelope(response.json())
        assert response.json()["header"]["messages"] == "sandbox upstream failure"
    # Token calls are not affected and do not consume failures.
    await _token(authed)
    assert (await authed.get("/v2/product-list")).status_code == 200
    await authed.post("/_sandbox/config", json={"fail_next": 1, "fail_status": 502})
    assert (await authed.get("/v2/product-list")).status_code == 502
    assert (await authed.get("/v2/product-list")).status_code == 200


async def test_latency_and_token_delay(authed: httpx.AsyncClient) -> None:
    await authed.post("/_sandbox/config", json={"latency_ms": 200, "token_delay_ms": 200})
    started = time.perf_counter()
    assert (await authed.get("/v2/product-list")).status_code == 200
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    await _token(authed)
    assert time.perf_counter() - started >= 0.2


async def test_invalid_config_is_refused(client: httpx.AsyncClient) -> None:
    for body in ({"fail_next": -1}, {"fail_status": 200}, {"latency": 5}, {"token_ttl": "1"}, [1]):
        response = await client.post("/_sandbox/config", json=body)
        assert response.status_code == 400, body
    assert (await client.get("/_sandbox/config")).json()["fail_status"] == 503


async def test_reset(authed: httpx.AsyncClient) -> None:
    await authed.post("/_sandbox/config", json={"latency_ms": 5, "fail_next": 3, "token_ttl": 9})
    await authed.post("/v2/order", json={"product_code": "PLN50", "customer_number": "1"})
    assert (await authed.post("/_sandbox/reset")).json() == {"ok": True}
    stats = await _stats(authed)
    assert stats["tokens_issued"] == 0 and stats["requests"] == {} and stats["unauthorized"] == 0
    assert stats["last_request"] is None and stats["orders"] == 0
    assert stats["config"] == {
        "token_ttl": 3600,
        "latency_ms": 0,
        "fail_next": 0,
        "fail_status": 503,
        "token_delay_ms": 0,
        "token_fail_next": 0,
        "token_fail_status": 503,
    }
    assert (await authed.get("/v2/product-list")).status_code == 401


async def test_token_fail_next(client: httpx.AsyncClient) -> None:
    await client.post("/_sandbox/config", json={"token_fail_next": 1})
    response = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("sandbox-client", "sandbox-secret")
    )
    assert response.status_code == 503
    await _token(client)


async def test_instances_are_independent(authed: httpx.AsyncClient) -> None:
    async with _client(create_sandbox_app()) as other:
        assert (await other.get("/v2/product-list", headers=authed.headers)).status_code == 401
        assert (await _stats(other))["tokens_issued"] == 0


async def test_mounted_under_a_prefix() -> None:
    parent = FastAPI()
    parent.mount("/sandbox", create_sandbox_app())
    async with _client(parent) as client:
        response = await client.post(
            "/sandbox/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("sandbox-client", "sandbox-secret"),
        )
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        response = await client.get("/sandbox/v2/order/TRIGGER-S02", headers=headers)
        assert response.status_code == 400 and response.json()["header"]["error_code"] == "S02"
        stats = (await client.get("/sandbox/_sandbox/stats")).json()
        assert stats["last_request"]["path"] == "/v2/order/TRIGGER-S02"
        assert stats["requests"] == {"POST /oauth/token": 1, "GET /v2/order/{order_id}": 1}
        missing = await client.get("/sandbox/v2/nothing-here")
        assert missing.status_code == 404
        _assert_envelope(missing.json())


# --- as its own process -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_runs_as_a_process() -> None:
    port = _free_port()
    args = ["-m", "app.sandbox", "--host", "127.0.0.1", "--port", str(port), "--token-ttl", "77"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
            deadline = time.monotonic() + 20
            while True:
                assert process.returncode is None, "the sandbox process exited"
                try:
                    await client.get("/_sandbox/stats")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the sandbox did not start"
                    await asyncio.sleep(0.1)
            response = await client.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("sandbox-client", "sandbox-secret"),
            )
            assert response.status_code == 200
            assert response.json()["expires_in"] == 77
    finally:
        if process.returncode is None:
            process.terminate()
        out, err = await asyncio.wait_for(process.communicate(), timeout=10)
    assert out == b""
    assert b"Traceback" not in err, err.decode()
