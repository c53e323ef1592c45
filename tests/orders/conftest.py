"""Orders fixtures: an empty orders table per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest


@pytest.fixture(autouse=True)
async def _clean_orders(database_url: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("TRUNCATE orders")
    finally:
        await conn.close()
    yield
