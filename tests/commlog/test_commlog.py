"""Communication log: one row per gateway request, redacted, batched, flushed on shutdown."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from app.commlog import service
from app.commlog.models import CommLog
from tests.conftest import ADMIN_KEY, Running, Sandbox
from tests.support import eventually


async def _rows(sluice: Running, client_id: str) -> list[CommLog]:
    async with sluice.state.sessionmaker() as session:
        result = await session.scalars(
            select(CommLog).where(CommLog.client_id == client_id).order_by(CommLog.id)
        )
        return list(result.all())


async def test_success_and_error_rows_are_written_and_redacted(sluice: Running, sandbox: Sandbox) -> None:
    client_id = f"shop-{uuid.uuid4().hex[:8]}"
    headers = sluice.headers(**{"X-Client-ID": client_id})
    ok = await sluice.client.get("/v1/products", params={"per_page": 2}, headers=headers)
    bad = await sluice.client.post(
        "/v1/inquiries",
        json={"product_code": "PLN50", "customer_number": "TRIGGER-U01"},
        headers=headers,
    )
    assert ok.status_code == 200 and bad.status_code == 422

    rows = await eventually(lambda: _rows_if(sluice, client_id, 2))
    assert isinstance(rows, list)
    first, second = rows
    assert first.method == "GET" and first.path == "/v1/products" and first.query == "per_page=2"
    assert first.status == 200 and first.error_code is None
    assert first.request_id == ok.headers["x-request-id"]
    assert first.upstream_url and "/v2/product-list?" in first.upstream_url
    assert first.upstream_status == 200 and first.upstream_duration_ms is not None
    assert first.duration_ms >= first.upstream_duration_ms
    assert first.trace_id and len(first.trace_id) == 32
    assert first.request_headers["x-api-key"] == "[REDACTED]"
    assert ADMIN_KEY not in str(first.request_headers)
    assert first.response_body and '"data"' in first.response_body

    assert second.status == 422 and second.error_code == "bill_not_valid"
    assert second.request_body and "TRIGGER-U01" in second.request_body
    assert second.upstream_status == 400
    assert second.api_client_id == "bootstrap"


async def _rows_if(sluice: Running, client_id: str, count: int) -> list[CommLog] | None:
    rows = await _rows(sluice, client_id)
    return rows if len(rows) >= count else None


async def test_validation_failures_are_logged_too(sluice: Running) -> None:
    client_id = f"bad-{uuid.uuid4().hex[:8]}"
    await sluice.client.get(
        "/v1/products", params={"per_page": 0}, headers=sluice.headers(**{"X-Client-ID": client_id})
    )
    rows = await eventually(lambda: _rows_if(sluice, client_id, 1))
    assert isinstance(rows, list)
    assert rows[0].status == 422 and rows[0].error_code == "validation_error"
    assert rows[0].upstream_url is None


async def test_bodies_are_truncated_and_secrets_redacted(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    raw = service.body_text(
        b'{"password": "hunter2", "nested": {"api_key": "k"}, "x": "' + b"a" * 200 + b'"}', 60
    )
    assert raw is not None and "hunter2" not in raw and "truncated" in raw
    async with start_app(commlog_body_limit=100) as sluice:
        client_id = f"trunc-{uuid.uuid4().hex[:8]}"
        await sluice.client.get(
            "/v1/products", params={"per_page": 50}, headers=sluice.headers(**{"X-Client-ID": client_id})
        )
        rows = await eventually(lambda: _rows_if(sluice, client_id, 1))
        assert isinstance(rows, list)
        assert rows[0].response_body is not None and "…[truncated" in rows[0].response_body
        assert len(rows[0].response_body) < 140


async def test_buffer_is_flushed_on_shutdown(start_app, sandbox: Sandbox) -> None:  # type: ignore[no-untyped-def]
    client_id = f"flush-{uuid.uuid4().hex[:8]}"
    async with start_app(commlog_flush_interval=3600, commlog_batch_size=10_000) as sluice:
        for _ in range(5):
            await sluice.client.get("/v1/products", headers=sluice.headers(**{"X-Client-ID": client_id}))
        assert sluice.state.commlog.pending >= 5
        sessionmaker = sluice.state.sessionmaker
        assert await _rows(sluice, client_id) == []
    # The engine is disposed at shutdown; a fresh one sees the rows.
    async with start_app() as again:
        assert len(await _rows(again, client_id)) == 5
        del sessionmaker


async def test_no_database_round_trip_on_the_request_path(sluice: Running, sandbox: Sandbox) -> None:
    # Until the writer runs, the entry only exists in memory.
    sluice.state.commlog._interval = 3600  # type: ignore[attr-defined]
    client_id = f"mem-{uuid.uuid4().hex[:8]}"
    await sluice.client.get("/v1/products", headers=sluice.headers(**{"X-Client-ID": client_id}))
    assert any(e["client_id"] == client_id for e in sluice.state.commlog._buffer)  # type: ignore[attr-defined]


async def test_query_api_filters_and_paginates(sluice: Running, sandbox: Sandbox) -> None:
    client_id = f"q-{uuid.uuid4().hex[:8]}"
    headers = sluice.headers(**{"X-Client-ID": client_id})
    for _ in range(3):
        await sluice.client.get("/v1/products", headers=headers)
    await sluice.client.get("/v1/products", params={"product_code": "TRIGGER-S01"}, headers=headers)
    await eventually(lambda: _rows_if(sluice, client_id, 4))

    page1 = await sluice.client.get(
        "/v1/comm-logs", params={"client_id": client_id, "limit": 2}, headers=headers
    )
    assert page1.status_code == 200
    body = page1.json()
    assert len(body["data"]) == 2 and body["meta"]["next_cursor"]
    page2 = await sluice.client.get(
        "/v1/comm-logs",
        params={"client_id": client_id, "limit": 2, "cursor": body["meta"]["next_cursor"]},
        headers=headers,
    )
    ids = [r["id"] for r in body["data"]] + [r["id"] for r in page2.json()["data"]]
    assert len(set(ids)) == 4 and ids == sorted(ids, reverse=True)
    assert page2.json()["meta"]["next_cursor"] is None

    by_code = await sluice.client.get(
        "/v1/comm-logs", params={"client_id": client_id, "error_code": "product_closed"}, headers=headers
    )
    assert [r["status"] for r in by_code.json()["data"]] == [409]
    by_status = await sluice.client.get(
        "/v1/comm-logs", params={"client_id": client_id, "status": 200}, headers=headers
    )
    assert len(by_status.json()["data"]) == 3
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later = await sluice.client.get(
        "/v1/comm-logs", params={"client_id": client_id, "since": future}, headers=headers
    )
    assert later.json()["data"] == []

    assert (
        await sluice.client.get("/v1/comm-logs", params={"cursor": "garbage"}, headers=headers)
    ).status_code == 400
    beyond = base64.urlsafe_b64encode(b"id:99999999999999999999999").decode()  # not a BIGINT
    assert (
        await sluice.client.get("/v1/comm-logs", params={"cursor": beyond}, headers=headers)
    ).status_code == 400
    naive = await sluice.client.get("/v1/comm-logs", params={"since": "2026-01-01T00:00:00"}, headers=headers)
    assert naive.status_code == 400


async def test_purge_deletes_rows_past_retention(sluice: Running) -> None:
    old_client = f"old-{uuid.uuid4().hex[:8]}"
    async with sluice.state.sessionmaker.begin() as session:
        for age_days in (40, 35, 1):
            session.add(
                CommLog(
                    created_at=datetime.now(UTC) - timedelta(days=age_days),
                    client_id=old_client,
                    method="GET",
                    path="/v1/products",
                    status=200,
                    duration_ms=1.0,
                )
            )
    deleted = await service.purge_older_than(sluice.state.sessionmaker, timedelta(days=30))
    assert deleted >= 2
    assert len(await _rows(sluice, old_client)) == 1


async def test_entries_survive_a_database_outage(make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from app.commlog.service import CommLogWriter
    from app.db import create_engine
    from tests.support import free_port

    settings = make_settings()
    down = create_engine(
        make_settings(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
    )
    up = create_engine(settings)
    client_id = f"outage-{uuid.uuid4().hex[:8]}"
    try:
        writer = CommLogWriter(settings, down)
        for i in range(3):
            writer.enqueue(
                {
                    "created_at": datetime.now(UTC),
                    "client_id": client_id,
                    "method": "GET",
                    "path": f"/{i}",
                    "status": 200,
                    "duration_ms": 1.0,
                }
            )
        with pytest.raises(OSError):
            await writer.flush()
        assert writer.pending == 3  # kept for the next try, in order
        writer._engine = up  # the database is back
        assert await writer.flush() == 3
        async with up.connect() as conn:
            rows = (
                await conn.execute(
                    select(CommLog.path).where(CommLog.client_id == client_id).order_by(CommLog.id)
                )
            ).all()
        assert [r.path for r in rows] == ["/0", "/1", "/2"]
    finally:
        await down.dispose()
        await up.dispose()


async def test_buffer_is_bounded(make_settings) -> None:  # type: ignore[no-untyped-def]
    from app.commlog.service import CommLogWriter
    from app.db import create_engine

    settings = make_settings(commlog_buffer_max=2)
    engine = create_engine(settings)
    writer = CommLogWriter(settings, engine)
    for i in range(5):
        writer.enqueue({"path": f"/{i}"})
    assert [e["path"] for e in writer._buffer] == ["/3", "/4"]  # the oldest were dropped (and counted)
    await engine.dispose()


async def test_oversized_caller_values_are_cut_to_their_columns(sluice: Running, sandbox: Sandbox) -> None:
    client_id = "long-" + uuid.uuid4().hex[:8] + "x" * 300
    response = await sluice.client.get("/v1/products", headers=sluice.headers(**{"X-Client-ID": client_id}))
    assert response.status_code == 400  # invalid_header; and still logged
    rows = await eventually(lambda: _rows_if(sluice, client_id[:128], 1))
    assert isinstance(rows, list) and rows[0].error_code == "invalid_header"


async def test_a_nul_character_in_a_body_is_logged_not_lost(sluice: Running, sandbox: Sandbox) -> None:
    """PostgreSQL stores no NUL in text: the entry keeps the body with U+FFFD in its place."""
    client_id = f"nul-{uuid.uuid4().hex[:8]}"
    response = await sluice.client.post(
        "/v1/purchases",
        content=b'{"product_code": "x\x00y"}',
        headers=sluice.headers(**{"X-Client-ID": client_id, "Content-Type": "application/json"}),
    )
    assert response.status_code == 400  # not JSON: a raw control character in a string
    rows = await eventually(lambda: _rows_if(sluice, client_id, 1))
    assert isinstance(rows, list) and rows[0].request_body == '{"product_code": "x\ufffdy"}'


async def test_a_row_the_database_refuses_does_not_block_the_others(make_settings) -> None:  # type: ignore[no-untyped-def]
    from app.commlog.service import CommLogWriter
    from app.db import create_engine

    settings = make_settings()
    engine = create_engine(settings)
    client_id = f"poison-{uuid.uuid4().hex[:8]}"
    try:
        writer = CommLogWriter(settings, engine)
        for i in range(5):
            writer.enqueue(
                {
                    "created_at": datetime.now(UTC),
                    "client_id": client_id,
                    "method": "GET",
                    "path": f"/{i}",
                    # Row 2 carries a value the status column cannot hold.
                    "status": "not-a-status" if i == 2 else 200,
                    "duration_ms": 1.0,
                }
            )
        assert await writer.flush() == 4
        assert writer.pending == 0
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(CommLog.path).where(CommLog.client_id == client_id).order_by(CommLog.id)
                )
            ).all()
        assert [r.path for r in rows] == ["/0", "/1", "/3", "/4"]
    finally:
        await engine.dispose()
