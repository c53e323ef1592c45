"""The pool checks a connection that sat idle before handing it out, and only then."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import create_engine
from app.settings import Settings


async def _backend_pid(engine: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_killed_while_idle_is_replaced_before_use(
    make_settings: Callable[..., Settings],
) -> None:
    engine = create_engine(make_settings(database_pool_size=1, database_ping_after_idle=0.0))
    other = create_engine(make_settings(database_pool_size=1))
    try:
        first = await _backend_pid(engine)
        # The database drops the pooled connection (as a restart would) while it sits idle.
        async with other.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        # The next checkout finds it dead and gets a new connection: no error reaches the caller.
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_connection_in_busy_use_is_not_checked_and_the_pool_renews_after_a_failure(
    make_settings: Callable[..., Settings],
) -> None:
    engine = create_engine(make_settings(database_pool_size=1, database_ping_after_idle=3600.0))
    other = create_engine(make_settings(database_pool_size=1))
    try:
        first = await _backend_pid(engine)
        async with other.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        # Not idle long enough to be checked: the use that meets the dead connection fails...
        with pytest.raises(DBAPIError):
            await _backend_pid(engine)
        # ...and the pool has been renewed for the next one.
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()
        await other.dispose()
