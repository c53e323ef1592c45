"""Background loops of the comm log: the retention purge (the writer loop is CommLogWriter.run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from app.commlog.service import purge_older_than
from app.state import AppState

logger = logging.getLogger("sluice.commlog")


async def run_purge(state: AppState, stop: asyncio.Event) -> None:
    """Delete rows past the retention period, every commlog_purge_interval seconds."""
    settings = state.settings
    retention = timedelta(days=settings.commlog_retention_days)
    while not stop.is_set():
        try:
            deleted = await purge_older_than(state.sessionmaker, retention)
            if deleted:
                logger.info("comm-log purge: %d rows older than %s deleted", deleted, retention)
        except Exception:
            logger.exception("comm-log purge failed; retrying next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.commlog_purge_interval)
