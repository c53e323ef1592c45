"""Orders fixtures: an empty orders table per test; two real instances peered with each other."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ADMIN_KEY, REDIS_URL, fresh_database, new_redis_prefix
from tests.support import free_port, start_process, stop_process, wait_http


@pytest.fixture(autouse=True)
async def _clean_orders(database_url: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("TRUNCATE orders")
    finally:
        await conn.close()
    yield


@dataclass
class Instance:
    name: str
    url: str
    env: dict[str, str]
    log: Path
    proc: Any = None
    starts: int = 0

    def start(self) -> None:
        port = self.url.rsplit(":", 1)[1]
        self.starts += 1
        self.proc = start_process(
            ["-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", port],
            env=self.env,
            # One log per start: a restarted instance must not erase what the previous one said.
            log=self.log.with_suffix(f".{self.starts}.log"),
        )
        wait_http(f"{self.url}/health/live", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def instance_env(
    name: str, database: str, peer: str, prefix: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a Sluice process syncing with `peer`; rounds on demand (the loop runs
    one at start-up, then sleeps)."""
    return {
        "INSTANCE_NAME": name,
        "DATABASE_URL": database,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix or new_redis_prefix(),
        "BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "SANDBOX_ENABLED": "false",
        "PARTNER_BASE_URL": "http://127.0.0.1:9",
        "COMMLOG_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "SYNC_PEER_URL": peer,
        "SYNC_PEER_API_KEY": ADMIN_KEY,
        "SYNC_INTERVAL": "3600",
        **extra,
    }


def wait_for_first_round(instance: Instance, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{instance.url}/v1/sync/status", headers={"X-API-Key": ADMIN_KEY}, timeout=10)
        if status.status_code == 200 and status.json()["last_run_at"] is not None:
            return
        assert time.monotonic() < deadline, f"no sync round ran on {instance.name} at start-up"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    logs = tmp_path_factory.mktemp("sync")
    with fresh_database("sluice_sync_a") as db_a, fresh_database("sluice_sync_b") as db_b:
        url_a, url_b = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"

        a = Instance("a", url_a, instance_env("a", db_a, url_b, SYNC_BATCH_SIZE="50"), logs / "a.log")
        b = Instance("b", url_b, instance_env("b", db_b, url_a, SYNC_BATCH_SIZE="50"), logs / "b.log")
        a.start()
        b.start()
        # Each loop runs a round at start-up: let it end before the tests, or it could pull
        # (or push) what a test means its own rounds to carry.
        for instance in (a, b):
            wait_for_first_round(instance)
        try:
            yield a, b
        finally:
            a.stop()
            b.stop()
