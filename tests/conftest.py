"""Shared fixtures: a fresh Postgres database per test session (migrated once, so migrations
are tested too), a Redis key prefix per test, the sandbox partner served as a real process,
and Sluice apps with their lifespan running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from app.state import AppState
from tests.support import ROOT, Receiver, free_port, receiver_server, start_process, stop_process, wait_http

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "test-admin-" + uuid.uuid4().hex
# Every Redis key of this test session starts with this, so that the session's clean-up never
# touches the keys of another session running at the same time on the same server.
REDIS_SESSION_PREFIX = f"sluicetest:{uuid.uuid4().hex[:8]}:"


def new_redis_prefix() -> str:
    return f"{REDIS_SESSION_PREFIX}{uuid.uuid4().hex[:12]}:"


@contextlib.contextmanager
def fresh_database(prefix: str = "sluice_test") -> Iterator[str]:
    """A new Postgres database, migrated with `python -m app migrate`; dropped afterwards."""
    import asyncio

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("sandbox") / "sandbox.log"
    proc = start_process(["-m", "app.sandbox", "--host", "127.0.0.1", "--port", str(port)], log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_sandbox/stats", proc=proc)
        yield url
    finally:
        stop_process(proc)


@dataclass
class Sandbox:
    """Control of the sandbox partner process."""

    url: str
    http: httpx.AsyncClient

    async def stats(self) -> dict[str, Any]:
        return (await self.http.get("/_sandbox/stats")).json()  # type: ignore[no-any-return]

    async def config(self, **values: Any) -> dict[str, Any]:
        response = await self.http.post("/_sandbox/config", json=values)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    async def revoke_tokens(self) -> None:
        (await self.http.post("/_sandbox/revoke-tokens")).raise_for_status()

    async def tokens_issued(self) -> int:
        return int((await self.stats())["tokens_issued"])


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[Sandbox]:
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as http:
        (await http.post("/_sandbox/reset")).raise_for_status()
        yield Sandbox(sandbox_url, http)


@pytest.fixture
def redis_prefix() -> str:
    return new_redis_prefix()


@pytest.fixture(scope="session", autouse=True)
async def _cleanup_redis() -> AsyncIterator[None]:
    yield
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{REDIS_SESSION_PREFIX}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def make_settings(database_url: str, sandbox_url: str, redis_prefix: str) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            database_url=database_url,
            redis_url=REDIS_URL,
            redis_key_prefix=redis_prefix,
            partner_base_url=sandbox_url,
            sandbox_enabled=False,
            bootstrap_admin_key=ADMIN_KEY,
            commlog_flush_interval=0.05,
            notify_dedup_window=0.0,
            log_level="INFO",
            environment="test",
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@dataclass
class Running:
    app: FastAPI
    state: AppState
    client: httpx.AsyncClient

    def headers(self, key: str = ADMIN_KEY, **extra: str) -> dict[str, str]:
        return {"X-API-Key": key, "X-Client-ID": "test-client", "X-Language-ID": "en", **extra}


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Running]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sluice.test", timeout=30
        ) as client:
            yield Running(app, app.state.sluice, client)


@pytest.fixture
def start_app(make_settings: Callable[..., Settings]) -> Callable[..., Any]:
    """`async with start_app(**settings_overrides) as sluice:` — an app with its lifespan running."""

    def start(**overrides: Any) -> Any:
        return running_app(make_settings(**overrides))

    return start


@pytest.fixture
async def sluice(start_app: Callable[..., Any], sandbox: Sandbox) -> AsyncIterator[Running]:
    async with start_app() as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver server (Slack, Datadog, New Relic stand-ins) on a loopback port."""
    async with receiver_server() as recv:
        yield recv
