"""Request ids, the problem+json format, unhandled errors, health and metrics, logs."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tests.conftest import Running, Sandbox


async def test_request_id_is_echoed_or_generated(sluice: Running) -> None:
    given = await sluice.client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = await sluice.client.get("/health/live")
    assert len(generated.headers["x-request-id"]) == 32
    unsafe = await sluice.client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"


async def test_unknown_route_is_problem_json(sluice: Running) -> None:
    response = await sluice.client.get("/nope", headers={"X-Request-ID": "rid-1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body == {
        "type": "urn:sluice:problem:not_found",
        "title": "Not found",
        "status": 404,
        "code": "not_found",
        "request_id": "rid-1",
        "instance": "/nope",
    }


async def test_unhandled_error_is_500_without_internals(
    sluice: Running, caplog: pytest.LogCaptureFixture
) -> None:
    @sluice.app.get("/boom-test")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    with caplog.at_level(logging.ERROR):
        response = await sluice.client.get("/boom-test", headers={"X-Request-ID": "rid-boom"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal_error"
    assert response.json()["request_id"] == "rid-boom"
    assert response.headers["x-request-id"] == "rid-boom"
    assert "secret internal detail" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret internal detail" in str(logged[0].exc_info[1])
    assert getattr(logged[0], "request_id", None) == "rid-boom"


async def test_text_the_database_cannot_store_is_422_wherever_it_surfaces(sluice: Running) -> None:
    """The safety net behind field validation: PostgreSQL refusing a NUL character is the
    client's 422, not a 500 (here raised by a real query the validation did not guard)."""
    from sqlalchemy import text

    @sluice.app.post("/nul-test")
    async def store(value: dict[str, str]) -> None:
        async with sluice.state.sessionmaker() as session:
            await session.execute(text("SELECT CAST(:v AS text)"), {"v": value["v"]})

    response = await sluice.client.post("/nul-test", json={"v": "a\u0000b"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error" and "NUL" in response.json()["detail"]


async def test_health(sluice: Running) -> None:
    assert (await sluice.client.get("/health/live")).json() == {"status": "ok"}
    ready = await sluice.client.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["breakers"] == {"partner": "closed"}


async def test_readiness_fails_when_redis_is_down(start_app) -> None:  # type: ignore[no-untyped-def]
    from tests.support import free_port

    async with start_app(redis_url=f"redis://127.0.0.1:{free_port()}/0") as sluice:
        ready = await sluice.client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"]["ok"] is False


async def test_metrics(sluice: Running, sandbox: Sandbox) -> None:
    await sluice.client.get("/v1/products", headers=sluice.headers())
    assert (await sluice.client.get("/metrics")).status_code == 401
    text = (await sluice.client.get("/metrics", headers=sluice.headers())).text
    assert 'sluice_http_requests_total{method="GET",route="/v1/products",status="200"}' in text
    assert "sluice_http_request_duration_seconds_bucket" in text
    assert 'sluice_upstream_requests_total{endpoint="product-list",status="200",upstream="partner"}' in text
    assert 'sluice_breaker_state{upstream="partner"}' in text
    assert 'sluice_token_refreshes_total{outcome="ok",upstream="partner"}' in text


async def test_logs_are_json_with_request_and_trace_ids(sluice: Running, sandbox: Sandbox) -> None:
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_sluice", False))
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        response = await sluice.client.get(
            "/v1/products", headers=sluice.headers(**{"X-Request-ID": "rid-log"})
        )
    finally:
        handler.setStream(previous)
    assert response.status_code == 200
    output = buffer.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    access = [entry for entry in lines if entry.get("route") == "/v1/products"]
    assert access and access[0]["request_id"] == "rid-log"
    assert access[0]["trace_id"] and len(access[0]["trace_id"]) == 32
    assert access[0]["level"] == "INFO" and access[0]["status"] == 200
    assert sluice.headers()["X-API-Key"] not in output


async def test_docs_are_served(sluice: Running) -> None:
    spec = (await sluice.client.get("/openapi.json")).json()
    assert "/v1/products" in spec["paths"]
    assert "APIKeyHeader" in spec["components"]["securitySchemes"]
