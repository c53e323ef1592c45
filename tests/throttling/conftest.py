"""Throttling fixtures: clean configuration tables per test, the original's headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.airlock.conftest import airlock, clock, make_worker  # noqa: F401 (fixtures used here too)
from tests.conftest import ADMIN_KEY

BASE = "/authoring"
ORG = "default"  # the bootstrap admin key's organisation

# The original's example (seed 004).
EXAMPLE: dict[str, Any] = {
    "name": "throttling-config-external",
    "description": "example of throttling config for an external endpoint",
    "urlPattern": "https://api.example.org/data/2.5/*",
    "methods": ["POST", "PUT"],
    "maxThroughput": 4000,
}


def headers(sandbox: str = "prod", org: str = ORG, key: str = ADMIN_KEY) -> dict[str, str]:
    return {"X-API-Key": key, "x-gw-ims-org-id": org, "x-sandbox-name": sandbox}


@pytest.fixture(autouse=True)
async def _clean_throttling(database_url: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # The airlock connector too: its ttl and delays (left by another test) shape the queued calls.
        await conn.execute(
            "TRUNCATE throttling_config, throttling_runtime, async_call_log, async_call, airlock_connector"
        )
    finally:
        await conn.close()
    yield


async def create(client: httpx.AsyncClient, body: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    response = await client.post(f"{BASE}/throttlingConfigs", json=body or EXAMPLE, headers=headers(**kw))
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def deploy(client: httpx.AsyncClient, uid: str) -> dict[str, Any]:
    response = await client.post(f"{BASE}/throttlingConfigs/{uid}/deploy", headers=headers())
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]
