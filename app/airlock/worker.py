"""The delivery loop: claim due calls, run them, deliver their replies, record what happened.

- Claim: due rows of CALL_RETRY/RESPONSE_RETRY whose lease is free, `FOR UPDATE SKIP LOCKED`,
  leased to this worker (`locked_by`, `locked_until`) in the same statement. Any number of
  workers in any number of replicas share the table without taking the same row.
- Wake-up: Postgres `LISTEN/NOTIFY` (no payload: the row is the message) and an in-process
  event, with polling as a backstop.
- A killed worker's rows come back when their lease runs out (at-least-once; the reply's
  `webhook-id` is stable so receivers can de-duplicate).
- Results are written in batches, each update fenced on the lease, so an operator's action
  on a call (cancel, retry) wins over a worker that took it earlier.
- Shutdown stops claiming, lets running calls finish for a grace period, writes their results
  and releases the leases of the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram
from sqlalchemy import Table, bindparam, insert, select, text, update

from app.airlock import alerts
from app.airlock import service as airlock_service
from app.airlock.delivery import Sender, envelope
from app.airlock.machine import CallState, Outcome, Step, after_call, after_reply, jittered
from app.airlock.models import AsyncCall, AsyncCallLog, CallStatus
from app.airlock.replay import replay
from app.db import utcnow
from app.state import AppState
from app.upstream.errors import ThrottleQueued

logger = logging.getLogger("sluice.airlock")

ATTEMPTS = Counter(
    "sluice_airlock_attempts_total",
    "Airlock attempts, by connector, phase and outcome",
    ["connector", "phase", "outcome"],
)
ATTEMPT_LATENCY = Histogram("sluice_airlock_attempt_seconds", "Duration of an airlock attempt", ["phase"])

_DUE = text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')")  # literal: matches the partial index
_TABLE: Table = AsyncCall.__table__  # type: ignore[assignment]
_LOG_TABLE: Table = AsyncCallLog.__table__  # type: ignore[assignment]
_FINISHED = {CallStatus.DONE, CallStatus.CALL_ERROR, CallStatus.RESPONSE_ERROR}


@dataclass
class _Result:
    values: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)
    failed: bool = False


def _log(call_id: Any, phase: str, outcome: str, at: datetime, **fields: Any) -> dict[str, Any]:
    row = {
        "call_id": call_id,
        "phase": phase,
        "outcome": outcome,
        "at": at,
        "http_status": None,
        "error": None,
        "latency_ms": None,
        "next_try": None,
        "ttl": None,
        "author": None,
        "detail": None,
    }
    row.update(fields)
    return row


class DeliveryWorker:
    """One process's delivery loop. `run_once()` does one claim-and-process pass (tests)."""

    def __init__(
        self,
        state: AppState,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.state = state
        self.settings = state.settings
        self.clock = clock
        self.jitter = jittered(self.settings.airlock_jitter, rng)
        self.worker_id = worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.connectors = airlock_service.ConnectorCache(self.settings)
        self.sender = Sender(self.settings, state.url_policy)
        self._inflight: set[asyncio.Task[None]] = set()
        self._results: list[_Result] = []
        # The signing secrets of claimed calls, read with the claim (one query per batch rather
        # than a transaction per reply); taken by `process`.
        self._secrets: dict[Any, list[str]] = {}
        self._write_lock = asyncio.Lock()
        self._is_postgres = state.engine.dialect.name == "postgresql"

    async def aclose(self) -> None:
        await self.sender.aclose()

    # ------------------------------------------------------------------ claim

    async def claim(self, limit: int) -> list[AsyncCall]:
        """Lease up to `limit` due calls to this worker."""
        now = self.clock()
        lease_end = now + timedelta(seconds=self.settings.airlock_lease)
        due = (
            select(AsyncCall.id)
            .where(_DUE, AsyncCall.next_try <= now)
            .where((AsyncCall.locked_until.is_(None)) | (AsyncCall.locked_until < now))
            .order_by(AsyncCall.next_try)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.state.sessionmaker.begin() as session:
            rows = await session.scalars(
                update(AsyncCall)
                .where(AsyncCall.id.in_(due.scalar_subquery()))
                .values(locked_by=self.worker_id, locked_until=lease_end)
                .returning(AsyncCall)
                .execution_options(synchronize_session=False)
            )
            calls = list(rows.all())
            for call in calls:
                session.expunge(call)
            clients = {call.api_client_id for call in calls if call.reply_url}
            secrets = await airlock_service.live_secrets(session, clients, now)
        for call in calls:
            if call.api_client_id in secrets:
                self._secrets[call.id] = secrets[call.api_client_id]
        return calls

    # ------------------------------------------------------------------ process

    async def process(self, call: AsyncCall) -> _Result:
        """Run one claimed call as far as it goes now; the changes to write."""
        secrets = self._secrets.pop(call.id, None)
        connector = self.connectors.cached(call.connector)
        if connector is None:
            async with self.state.sessionmaker() as session:
                connector = await self.connectors.get(session, call.connector)
        schedule = connector.schedule(self.settings)
        result = _Result(values={})
        state = CallState(CallStatus(call.status), call.ttl, call.delay, call.next_try)
        if state.status == CallStatus.CALL_RETRY:
            state = await self._call_phase(call, state, schedule, result)
        if state.status == CallStatus.RESPONSE_RETRY:
            state = await self._reply_phase(call, state, schedule, result, secrets)
        now = self.clock()
        result.values.update(
            id=call.id,
            status=str(state.status),
            ttl=state.ttl,
            delay=state.delay,
            next_try=state.next_try,
            attempts=call.attempts,
            last_error=call.last_error,
            response_status=call.response_status,
            response_content_type=call.response_content_type,
            response_body=call.response_body,
            throttle_slot=call.throttle_slot,
            throttle_uid=call.throttle_uid,
            throttle_version=call.throttle_version,
            updated_at=now,
            finished_at=now if state.status in _FINISHED else None,
        )
        result.failed = state.status in (CallStatus.CALL_ERROR, CallStatus.RESPONSE_ERROR)
        return result

    async def _call_phase(
        self, call: AsyncCall, state: CallState, schedule: Any, result: _Result
    ) -> CallState:
        app = self.state.app
        assert app is not None, "the delivery loop needs state.app"
        replayed = await replay(app, call)
        now = self.clock()
        if replayed.throttled is not None:
            return self._queue_for_slot(call, state, result, replayed.throttled, now)
        # The reserved slot (if any) was used: later attempts take their own.
        call.throttle_slot = call.throttle_uid = call.throttle_version = None
        outcome = Outcome(final=replayed.final, http_status=replayed.status, error=replayed.error)
        step = after_call(
            state, outcome, has_reply=bool(call.reply_url), schedule=schedule, now=now, jitter=self.jitter
        )
        call.attempts += 1
        if replayed.final:
            call.response_status = replayed.status
            call.response_content_type = replayed.content_type
            call.response_body = replayed.body
            call.last_error = None
        else:
            call.last_error = replayed.error
        self._record(call, result, "call", step, now, replayed.status, replayed.error, replayed.latency_ms)
        return step.state

    def _queue_for_slot(
        self, call: AsyncCall, state: CallState, result: _Result, queued: ThrottleQueued, now: datetime
    ) -> CallState:
        """Throttling reserved a later slot: wait for it, with no attempt counted."""
        call.throttle_slot = datetime.fromtimestamp(queued.slot, UTC)
        call.throttle_uid = queued.config_uid
        call.throttle_version = queued.version
        local_slot = datetime.fromtimestamp(self.state.throttle.local_time(queued.slot), UTC)
        next_try = local_slot - timedelta(seconds=self.settings.throttle_queue_lookahead)
        step = Step(CallState(state.status, state.ttl, state.delay, next_try), "throttled")
        self._record(call, result, "call", step, now, 429, f"throttled: slot in {queued.wait:.1f} s", 0.0)
        return step.state

    async def _reply_phase(
        self, call: AsyncCall, state: CallState, schedule: Any, result: _Result, secrets: list[str] | None
    ) -> CallState:
        assert call.reply_url is not None
        now = self.clock()
        if not secrets:
            # Not read with the claim: the client has no secret yet (one is made here).
            async with self.state.sessionmaker.begin() as session:
                secrets = await airlock_service.signing_secrets(session, call.api_client_id, now)
        outcome, latency = await self.sender.post(
            call.reply_url, envelope(call), msg_id=str(call.id), secrets=secrets, now=now
        )
        now = self.clock()
        step = after_reply(state, outcome, schedule=schedule, now=now, jitter=self.jitter)
        call.attempts += 1
        call.last_error = None if outcome.ok else outcome.error
        self._record(call, result, "reply", step, now, outcome.http_status, outcome.error, latency)
        return step.state

    def _record(
        self,
        call: AsyncCall,
        result: _Result,
        phase: str,
        step: Step,
        now: datetime,
        status: int | None,
        error: str | None,
        latency_ms: float,
    ) -> None:
        ATTEMPTS.labels(call.connector, phase, step.outcome).inc()
        ATTEMPT_LATENCY.labels(phase).observe(latency_ms / 1000)
        pending = step.state.status in (CallStatus.CALL_RETRY, CallStatus.RESPONSE_RETRY)
        result.logs.append(
            _log(
                call.id,
                phase,
                step.outcome,
                now,
                http_status=status,
                error=error[:1000] if error else None,
                latency_ms=latency_ms,
                next_try=step.state.next_try if pending else None,
                ttl=step.state.ttl,
                # Which worker did it: operators follow a call across replicas.
                detail=f"-> {step.state.status} ({self.worker_id})",
            )
        )

    # ------------------------------------------------------------------ write

    async def _run_call(self, call: AsyncCall) -> None:
        try:
            result = await self.process(call)
        except Exception:
            # A bug, or the database went away mid-call: the lease runs out and the call is
            # taken again, so nothing is lost.
            logger.exception(
                "airlock call %s failed unexpectedly; it will be retried after its lease", call.id
            )
            return
        self._results.append(result)
        if len(self._results) >= self.settings.airlock_batch_size:
            await self.flush()

    async def flush(self) -> None:
        """Write the results gathered so far (one transaction, fenced on the lease)."""
        async with self._write_lock:
            results, self._results = self._results, []
            if not results:
                return
            try:
                await self._write(results)
            except Exception:
                logger.exception(
                    "could not write %d airlock results; their calls will run again", len(results)
                )
                return
        for result in results:
            if result.failed:
                alerts.report_soon(self.state, self.sender, result.values["id"])

    async def _write(self, results: list[_Result]) -> None:
        params = [{**{f"v_{k}": v for k, v in r.values.items()}, "v_owner": self.worker_id} for r in results]
        columns = [k for k in results[0].values if k != "id"]
        statement = (
            update(_TABLE)
            .where(_TABLE.c.id == bindparam("v_id"), _TABLE.c.locked_by == bindparam("v_owner"))
            .values({c: bindparam(f"v_{c}") for c in columns} | {"locked_by": None, "locked_until": None})
        )
        logs = [line for r in results for line in r.logs]
        async with self.state.sessionmaker.begin() as session:
            connection = await session.connection()
            await connection.execute(statement, params)
            if logs:
                await connection.execute(insert(_LOG_TABLE), logs)

    async def release(self, call_ids: list[Any]) -> None:
        """Give back leases of calls this worker will not finish (shutdown)."""
        for call_id in call_ids:
            self._secrets.pop(call_id, None)
        if not call_ids:
            return
        async with self.state.sessionmaker.begin() as session:
            await session.execute(
                update(AsyncCall)
                .where(AsyncCall.id.in_(call_ids), AsyncCall.locked_by == self.worker_id)
                .values(locked_by=None, locked_until=None)
            )
            await airlock_service.wake_workers(session)

    # ------------------------------------------------------------------ loops

    async def run_once(self) -> int:
        """Claim one batch, run it to the end, write the results; the number of calls run."""
        calls = await self.claim(self.settings.airlock_batch_size)
        await asyncio.gather(*(self._run_call(c) for c in calls))
        await self.flush()
        return len(calls)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: claim while there is capacity, sleep until woken or the poll interval."""
        wake = self.state.airlock_wake
        listener = (
            asyncio.create_task(self._listen(stop), name="airlock-listen") if self._is_postgres else None
        )
        flusher = asyncio.create_task(self._flush_every(stop, 0.02), name="airlock-flush")
        concurrency = max(self.settings.airlock_concurrency, 1)
        batch = self.settings.airlock_batch_size
        # Claim once this much room is free, not after every finished call: under load, a claim
        # per call would cost a transaction per call.
        low_water = max(1, min(batch, concurrency // 4))
        room_free = asyncio.Event()
        claimed: dict[asyncio.Task[None], Any] = {}

        def finished(task: asyncio.Task[None]) -> None:
            self._inflight.discard(task)
            claimed.pop(task, None)
            if concurrency - len(self._inflight) >= low_water:
                room_free.set()

        try:
            while not stop.is_set():
                room = concurrency - len(self._inflight)
                got = 0
                if room >= low_water:
                    wake.clear()  # before claiming: a wake-up during the claim is not lost
                    try:
                        calls = await self.claim(min(room, batch))
                    except Exception:
                        logger.exception("airlock claim failed; retrying after the poll interval")
                        calls = []
                    got = len(calls)
                    for call in calls:
                        task = asyncio.create_task(self._run_call(call))
                        claimed[task] = call.id
                        self._inflight.add(task)
                        task.add_done_callback(finished)
                    if got and got == min(room, batch):
                        continue  # more may be due right now
                if concurrency - len(self._inflight) < low_water:
                    # Full: wait for room, not for more work.
                    room_free.clear()
                    other: Any = room_free.wait()
                else:
                    other = wake.wait()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(other)]
                await asyncio.wait(
                    waiters, timeout=self.settings.airlock_poll_interval, return_when="FIRST_COMPLETED"
                )
                for waiter in waiters:
                    waiter.cancel()
        finally:
            await self._shutdown(claimed)
            flusher.cancel()
            if listener is not None:
                listener.cancel()
            for helper in (flusher, listener):
                if helper is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper

    async def _shutdown(self, claimed: dict[asyncio.Task[None], Any]) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=self.settings.airlock_shutdown_grace)
            unfinished = [claimed[t] for t in pending if t in claimed]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.release(unfinished)
            if unfinished:
                logger.info("airlock: released %d calls still running at shutdown", len(unfinished))
        await self.flush()

    async def _flush_every(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            await asyncio.sleep(interval)
            if self._results:
                await self.flush()

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN on the airlock channel; reconnect after a failure (polling covers the gap)."""
        url = self.state.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        wake = self.state.airlock_wake
        while not stop.is_set():
            connection = None
            try:
                connection = await asyncpg.connect(url)
                await connection.add_listener(airlock_service.NOTIFY_CHANNEL, lambda *_: wake.set())
                wake.set()  # anything that became due while we were not listening
                await stop.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("airlock LISTEN connection failed (%s); retrying in 5 s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=5)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), timeout=2)


async def run(state: AppState, stop: asyncio.Event) -> None:
    """The lifespan's delivery loop."""
    worker = DeliveryWorker(state)
    try:
        await worker.run(stop)
    finally:
        await worker.aclose()


async def run_cleanup(state: AppState, stop: asyncio.Event) -> None:
    """Delete finished calls older than the retention, in batches, every cleanup interval."""
    settings = state.settings
    while not stop.is_set():
        try:
            total = await purge(state)
            if total:
                logger.info("airlock cleanup deleted %d finished calls", total)
        except Exception:
            logger.exception("airlock cleanup failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.airlock_cleanup_interval)


async def purge(state: AppState, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete every finished call older than the retention; the number deleted."""
    before = (now or utcnow()) - timedelta(days=state.settings.airlock_retention_days)
    total = 0
    while True:
        started = time.perf_counter()
        async with state.sessionmaker.begin() as session:
            deleted = await airlock_service.purge_finished(session, before, batch)
        total += deleted
        if deleted < batch:
            return total
        # Let other work use the database between batches.
        await asyncio.sleep(min(time.perf_counter() - started, 1.0))
