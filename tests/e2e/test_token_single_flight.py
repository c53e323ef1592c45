"""200 concurrent requests on a cold cache, spread over two Sluice processes: one token request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY, REDIS_URL, Sandbox, new_redis_prefix
from tests.support import free_port, start_process, stop_process, wait_http


async def test_two_processes_share_one_token(database_url: str, sandbox: Sandbox, tmp_path: Path) -> None:
    await sandbox.config(token_delay_ms=300)  # widen the race window
    prefix = new_redis_prefix()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "PARTNER_BASE_URL": sandbox.url,
        "SANDBOX_ENABLED": "false",
        "BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "LOG_LEVEL": "WARNING",
    }
    ports = [free_port(), free_port()]
    procs = [
        start_process(
            ["-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "INSTANCE_NAME": f"sluice-{i}"},
            log=tmp_path / f"sluice-{i}.log",
        )
        for i, port in enumerate(ports)
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_http(f"http://127.0.0.1:{port}/health/live", proc=proc)
        headers = {"X-API-Key": ADMIN_KEY, "X-Client-ID": "e2e", "X-Language-ID": "en"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            responses = await asyncio.gather(
                *(
                    http.get(f"http://127.0.0.1:{ports[i % 2]}/v1/products", headers=headers)
                    for i in range(200)
                )
            )
        assert [r.status_code for r in responses] == [200] * 200
        assert await sandbox.tokens_issued() == 1
    finally:
        for proc in procs:
            stop_process(proc)
