"""The throttling maintenance loop: retire undeployed runtime versions, count queued calls.

Seed 004: once undeployed, a configuration is inactive at runtime and the calls queued under it
keep being processed for 24 hours; then it leaves the runtime. Here the runtime row is deleted
after THROTTLE_UNDEPLOY_GRACE and the async calls still waiting for one of its slots are
cancelled, each with a log line saying why, and a warning in the service log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update

from app.airlock import service as airlock_service
from app.airlock.models import PENDING_STATUSES, AsyncCall, CallStatus
from app.db import utcnow
from app.state import AppState
from app.throttling.limiter import THROTTLE_QUEUED
from app.throttling.models import ThrottlingRuntime

logger = logging.getLogger("sluice.throttling")

MAINTENANCE_INTERVAL = 30.0


async def retire_undeployed(state: AppState, now: datetime | None = None) -> int:
    """Delete runtime versions past their grace and drop their queued calls; calls dropped."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=state.settings.throttle_undeploy_grace)
    dropped = 0
    async with state.sessionmaker.begin() as session:
        expired = (
            await session.scalars(
                select(ThrottlingRuntime)
                .where(ThrottlingRuntime.active.is_(False), ThrottlingRuntime.undeployed_at < cutoff)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for runtime in expired:
            ids = (
                await session.scalars(
                    update(AsyncCall)
                    .where(
                        AsyncCall.throttle_uid == runtime.config_uid,
                        AsyncCall.throttle_version == runtime.version,
                        AsyncCall.throttle_slot.is_not(None),
                        AsyncCall.status.in_([str(s) for s in PENDING_STATUSES]),
                    )
                    .values(
                        status=str(CallStatus.CANCELLED),
                        finished_at=now,
                        updated_at=now,
                        throttle_slot=None,
                        locked_by=None,
                        locked_until=None,
                        last_error="dropped: its throttling configuration was undeployed more than 24 h ago",
                    )
                    .returning(AsyncCall.id)
                    .execution_options(synchronize_session=False)
                )
            ).all()
            for call_id in ids:
                session.add(
                    airlock_service.log_line(
                        call_id,
                        "throttle",
                        "dropped",
                        at=now,
                        error=f"throttling config {runtime.config_uid} v{runtime.version} undeployed "
                        f"at {runtime.undeployed_at:%Y-%m-%d %H:%M:%S} UTC; queued calls are kept 24 h",
                    )
                )
            if ids:
                logger.warning(
                    "dropped %d async calls queued under throttling config %s v%d (undeployed %s)",
                    len(ids),
                    runtime.config_uid,
                    runtime.version,
                    runtime.undeployed_at,
                )
            dropped += len(ids)
            await session.execute(delete(ThrottlingRuntime).where(ThrottlingRuntime.id == runtime.id))
            logger.info("throttling config %s v%d left the runtime", runtime.config_uid, runtime.version)
    return dropped


async def count_queued(state: AppState) -> dict[str, int]:
    """Async calls waiting for a reserved slot, per configuration (also set on the gauge)."""
    async with state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(AsyncCall.throttle_uid, func.count())
                .where(AsyncCall.throttle_slot.is_not(None), AsyncCall.status == str(CallStatus.CALL_RETRY))
                .group_by(AsyncCall.throttle_uid)
            )
        ).all()
    counts = {str(uid): int(n) for uid, n in rows}
    THROTTLE_QUEUED.clear()
    for uid, n in counts.items():
        THROTTLE_QUEUED.labels(uid).set(n)
    return counts


async def run_maintenance(state: AppState, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await retire_undeployed(state)
            await count_queued(state)
        except Exception:
            logger.exception("throttling maintenance failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=MAINTENANCE_INTERVAL)
