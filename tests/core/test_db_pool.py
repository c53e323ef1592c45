"""The pool checks a connection that sat idle before handing it out, and only then."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import create_engine
from app.settings import Settings


async def _backend_pid(engine: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@asynccontextmanager
async def pool_with_a_dead_connection(
    make_settings: Callable[..., Settings], ping_after_idle: float
) -> AsyncIterator[tuple[Any, int]]:
    """A one-connection pool whose pooled connection the database has just dropped (as a
    restart would) while it sat idle; and that connection's backend pid."""
    engine = create_engine(make_settings(database_pool_size=1, database_ping_after_idle=ping_after_idle))
    other = create_engine(make_settings(database_pool_size=1))
    try:
        pid = await _backend_pid(engine)
        async with other.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        yield engine, pid
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_connection_killed_while_idle_is_replaced_before_use(
    make_settings: Callable[..., Settings],
) -> None:
    async with pool_with_a_dead_connection(make_settings, ping_after_idle=0.0) as (engine, dead):
        # The checkout finds it dead and gets a new connection: no error reaches the caller.
        assert await _backend_pid(engine) != dead


async def test_a_connection_in_busy_use_is_not_checked_and_the_pool_renews_after_a_failure(
    make_settings: Callable[..., Settings],
) -> None:
    async with pool_with_a_dead_connection(make_settings, ping_after_idle=3600.0) as (engine, dead):
        # Not idle long enough to be checked: the use that meets the dead connection fails...
        with pytest.raises(DBAPIError):
            await _backend_pid(engine)
        # ...and the pool has been renewed for the next one.
        assert await _backend_pid(engine) != dead
