"""Airlock fixtures: a clean call table per test, an app without background loops, a hand clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.airlock.worker import DeliveryWorker
from app.state import AppState
from tests.conftest import Running


class Clock:
    """The time the worker sees: real time plus an offset that tests move instead of sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    @property
    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.offset += timedelta(seconds=seconds)
        return self.now

    def set(self, when: datetime) -> None:
        self.offset = when - datetime.now(UTC)


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(autouse=True)
async def _clean_airlock(database_url: str) -> AsyncIterator[None]:
    # Tests share the session's database: a call left by one test must not be claimed by the next.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("TRUNCATE async_call_log, async_call, airlock_connector, webhook_secret")
    finally:
        await conn.close()
    yield


@pytest.fixture
def clock() -> Clock:
    return Clock()


AIRLOCK_SETTINGS: dict[str, Any] = dict(
    run_workers=False, reply_url_allow_loopback=True, airlock_jitter=0.0, airlock_delay=30.0
)


@pytest.fixture
async def airlock(start_app: Callable[..., Any], sandbox: Any) -> AsyncIterator[Running]:
    """Sluice with its delivery loop off: tests drive a DeliveryWorker by hand."""
    async with start_app(**AIRLOCK_SETTINGS) as running:
        yield running


@pytest.fixture
async def make_worker(clock: Clock) -> AsyncIterator[Callable[[AppState], DeliveryWorker]]:
    workers: list[DeliveryWorker] = []

    def make(state: AppState) -> DeliveryWorker:
        worker = DeliveryWorker(state, clock=clock)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await worker.aclose()
