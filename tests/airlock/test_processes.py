"""Delivery across real processes: two workers share the table without double delivery, and a
worker killed with SIGKILL mid-batch loses nothing (its leases run out, another takes over)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from tests.airlock.conftest import AIRLOCK_SETTINGS, asyncpg_dsn
from tests.conftest import ADMIN_KEY, REDIS_URL, Sandbox, new_redis_prefix
from tests.support import Receiver, free_port, start_process, stop_process, wait_http

PURCHASE = {"product_code": "PLN50", "customer_number": "0812345678"}


def sluice_env(database_url: str, sandbox: Sandbox, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": new_redis_prefix(),
        "PARTNER_BASE_URL": sandbox.url,
        "SANDBOX_ENABLED": "false",
        "BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "REPLY_URL_ALLOW_LOOPBACK": "true",
        "AIRLOCK_POLL_INTERVAL": "0.2",
        "COMMLOG_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def start_sluice(env: dict[str, str], log: Path) -> tuple[Any, str]:
    port = free_port()
    proc = start_process(
        ["-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/live", proc=proc)
    return proc, url


async def enqueue(start_app: Any, receiver: Receiver, count: int) -> list[str]:
    """Store `count` calls due now (through an app whose own loop is off)."""
    async with start_app(**AIRLOCK_SETTINGS) as sluice:
        responses = await asyncio.gather(
            *(
                sluice.client.post(
                    "/v1/purchases",
                    json={**PURCHASE, "ref_id": f"p-{i}", "$reply": f"{receiver.url}/r"},
                    headers=sluice.headers(Prefer="respond-async"),
                )
                for i in range(count)
            )
        )
    assert {r.status_code for r in responses} == {202}
    return [r.json()["$reply_id"] for r in responses]


async def statuses(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM async_call GROUP BY status")
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


async def wait_all_done(database_url: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await statuses(database_url)).get("DONE") == count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not all DONE in time: {await statuses(database_url)}")


async def test_two_worker_processes_deliver_each_reply_once(
    database_url: str, sandbox: Sandbox, receiver: Receiver, start_app: Any, tmp_path: Path
) -> None:
    ids = await enqueue(start_app, receiver, 300)
    env = sluice_env(database_url, sandbox, AIRLOCK_CONCURRENCY="16", AIRLOCK_BATCH_SIZE="8")
    procs = [start_sluice(env, tmp_path / f"worker-{i}.log")[0] for i in range(2)]
    try:
        await wait_all_done(database_url, len(ids), timeout=60)
    finally:
        for proc in procs:
            stop_process(proc)
    delivered = Counter(r["headers"]["webhook-id"] for r in receiver.requests)
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1, [i for i, n in delivered.items() if n > 1]
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        workers = await conn.fetch(
            "SELECT DISTINCT substring(detail from '\\((.*)\\)') AS w FROM async_call_log WHERE phase = 'reply'"
        )
    finally:
        await conn.close()
    assert len(workers) == 2, "both processes took part"


async def test_a_worker_killed_mid_batch_loses_nothing(
    database_url: str, sandbox: Sandbox, receiver: Receiver, start_app: Any, tmp_path: Path
) -> None:
    ids = await enqueue(start_app, receiver, 40)
    await sandbox.config(latency_ms=1500)  # calls stay in flight long enough to be killed
    env = sluice_env(database_url, sandbox, AIRLOCK_LEASE="3", AIRLOCK_CONCURRENCY="64")
    doomed, _ = start_sluice(env, tmp_path / "doomed.log")
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        deadline = time.monotonic() + 20
        while await conn.fetchval("SELECT count(*) FROM async_call WHERE locked_by IS NOT NULL") < 40:
            assert time.monotonic() < deadline, "the worker never claimed the calls"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    await sandbox.config(latency_ms=0)
    assert (await statuses(database_url)).get("CALL_RETRY") == 40  # held by a dead worker
    survivor, _ = start_sluice(env, tmp_path / "survivor.log")
    try:
        await wait_all_done(database_url, len(ids), timeout=60)
    finally:
        stop_process(survivor)
    delivered = Counter(r["headers"]["webhook-id"] for r in receiver.requests)
    assert set(delivered) == set(ids)  # at least once each: nothing lost


async def test_graceful_shutdown_releases_calls_still_running(
    database_url: str, sandbox: Sandbox, receiver: Receiver, start_app: Any, tmp_path: Path
) -> None:
    await enqueue(start_app, receiver, 10)
    await sandbox.config(latency_ms=5000)
    env = sluice_env(database_url, sandbox, AIRLOCK_SHUTDOWN_GRACE="0.5", AIRLOCK_LEASE="600")
    proc, _ = start_sluice(env, tmp_path / "stopping.log")
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        deadline = time.monotonic() + 20
        while await conn.fetchval("SELECT count(*) FROM async_call WHERE locked_by IS NOT NULL") < 10:
            assert time.monotonic() < deadline, "the worker never claimed the calls"
            await asyncio.sleep(0.05)
        stop_process(proc)  # SIGTERM: uvicorn runs the lifespan's shutdown
        assert proc.returncode is not None
        # Released, not left for the 10-minute lease: another replica takes them at once.
        assert await conn.fetchval("SELECT count(*) FROM async_call WHERE locked_by IS NOT NULL") == 0
        assert await conn.fetchval("SELECT count(*) FROM async_call WHERE status = 'CALL_RETRY'") == 10
    finally:
        await conn.close()
        await sandbox.config(latency_ms=0)
