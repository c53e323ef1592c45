"""Two-way sync of orders with a peer instance, over the peer's own HTTP API (GET, POST, PUT).

Each change crosses once. The instance where an order changed pushes the change (POST for an
order the peer has not acknowledged yet, PUT otherwise) and the peer answers, in the same
response, the state the record took there: the acknowledgement travels back without a write
of its own. Each instance also follows the peer's change feed from a durable cursor, which
brings the peer's changes early and after outages; a change applied that way is acknowledged
when the peer's own push of it arrives (a repeat, answered at once).

No echo: every version records which instance made it (`changed_by`). A change applied from
the peer keeps the peer's name, so it is never pushed back, and the peer skips its own changes
when they come back through this instance's feed.

States and transitions are the seed's (app.orders.sync_states); versions guard them: a version
already held is a repeat, whatever the table would say. A local change not yet acknowledged
(ST_NEW, ST_UPD, ST_DEL) meeting a change from the peer is a collision on both sides: each
keeps its own copy and the other's (`remote_copy`) until someone resolves it (keep local, take
remote, or a merged edit), and the resolution is pushed as a new version that the peer, in
collision too, takes over its own copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from prometheus_client import Counter
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.errors import Conflict, NotFound
from app.orders.models import Order, SyncPeer
from app.orders.schemas import OrderOut, Replica, ResolveIn, SyncAnswer
from app.orders.service import _apply, mark_changed
from app.orders.sync_states import RETRIED, SyncState, transition
from app.redis import Redis
from app.redis import key as redis_key
from app.settings import Settings

logger = logging.getLogger("sluice.sync")
T = TypeVar("T")

SYNC_REQUESTS = Counter(
    "sluice_sync_requests_total", "Requests of the order sync to the peer", ["kind", "outcome"]
)
SYNC_RECEIVED = Counter(
    "sluice_sync_received_total", "Order replicas received from the peer, by resulting state", ["state"]
)

ACKNOWLEDGED = {
    SyncState.ST_NEW: SyncState.ST_OK,
    SyncState.ST_UPD: SyncState.ST_OK,
    SyncState.ST_DEL: SyncState.ST_DEL_SYNCED,
}
RESOLVABLE = {SyncState.ST_COLLISION, SyncState.ST_ERROR, SyncState.ST_ERROR_SYNCED}
SETTLED = {SyncState.ST_OK, SyncState.ST_DEL_SYNCED}


def replica_of(order: Order) -> dict[str, Any]:
    """The order as the peer's Replica, JSON-ready (built from valid stored data: the receiver
    validates it, the sender need not)."""
    return {
        **OrderOut.of(order).model_dump(mode="json"),
        "sync_state": SyncState(order.sync_state).name,
        "resolution": order.resolution_pending,
        "sync_error": order.sync_error,
    }


def _answer(order: Order | None, ack: int | None) -> SyncAnswer:
    """The receiver's answer; its copy of the order only when in collision (the sender keeps it
    as the remote copy), the state and version being all an acknowledgement needs."""
    state = SyncState(order.sync_state).name if order is not None else SyncState.ST_ERROR.name
    copy = OrderOut.of(order) if order is not None and state == SyncState.ST_COLLISION.name else None
    return SyncAnswer(state=state, ack_version=ack, order=copy)


def _take(order: Order, replica: Replica) -> None:
    """Make the local record the replica's version (content, version, author)."""
    _apply(order, replica.as_order_in())
    order.number = replica.number
    order.deleted = replica.deleted
    order.version = replica.version
    order.changed_by = replica.changed_by
    order.updated_at = replica.updated_at
    order.peer_version = replica.version
    order.remote_copy = None
    order.sync_error = None
    order.resolution_pending = False
    order.synced_at = utcnow()


async def receive(session: AsyncSession, replica: Replica) -> SyncAnswer:
    """Apply one replica sent by the peer; commit; say what became of it."""
    return (await receive_batch(session, [replica]))[0]


async def receive_batch(session: AsyncSession, replicas: list[Replica]) -> list[SyncAnswer]:
    """Apply replicas sent by the peer, in one transaction; an answer for each, in order."""

    async def apply(locals_: dict[uuid.UUID, Order]) -> list[SyncAnswer]:
        return [_receive(session, locals_, replica) for replica in replicas]

    answers = await _in_one_transaction(session, {r.id for r in replicas}, apply)
    for answer in answers:
        SYNC_RECEIVED.labels(answer.state).inc()
    return answers


async def _lock_orders(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Order]:
    """The local orders of `ids`, row-locked in id order (two batches sharing orders then
    cannot deadlock) and read afresh."""
    if not ids:
        return {}
    rows = await session.scalars(
        select(Order)
        .where(Order.id.in_(sorted(ids)))
        .order_by(Order.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {order.id: order for order in rows}


async def _in_one_transaction(
    session: AsyncSession,
    ids: set[uuid.UUID],
    work: Callable[[dict[uuid.UUID, Order]], Awaitable[T]],
) -> T:
    """Lock the orders of `ids`, run `work` on them and commit, retrying when a new order was
    inserted meanwhile by someone else (the peer's push and our pull of its feed at once):
    the second time it is a repeat."""
    for attempt in range(3):
        try:
            result = await work(await _lock_orders(session, ids))
            await session.commit()
            return result
        except IntegrityError:
            await session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _receive(session: AsyncSession, locals_: dict[uuid.UUID, Order], replica: Replica) -> SyncAnswer:
    """Apply one replica to the locked local copy (or a new one, added to `locals_`)."""
    local = locals_.get(replica.id)
    sent = SyncState[replica.sync_state]
    if local is not None and replica.changed_by == local.changed_by and replica.version <= local.version:
        # A version this side already holds (a lost answer, or the feed brought it first).
        local.peer_version = max(local.peer_version or 0, replica.version)
        return _answer(local, replica.version)
    if local is not None and replica.resolution and SyncState(local.sync_state) in RESOLVABLE:
        _take(local, replica)
        local.sync_state = (SyncState.ST_DEL_SYNCED if replica.deleted else SyncState.ST_OK).value
        mark_changed(local)
        return _answer(local, replica.version)

    current = SyncState(local.sync_state) if local is not None else None
    step = transition(sent, current)
    ack: int | None = None
    if local is None:
        local = Order(id=replica.id, origin=replica.origin, created_at=replica.created_at)
        _take(local, replica)
        local.sync_state = step.becomes.value
        if step.becomes is SyncState.ST_ERROR:
            local.sync_error = f"received {sent.name} for an order this instance does not have"
        mark_changed(local)
        session.add(local)
        locals_[replica.id] = local
        ack = replica.version if step.becomes is SyncState.ST_OK else None
    elif step.becomes is SyncState.ST_COLLISION:
        if current is not SyncState.ST_COLLISION or local.remote_copy is None:
            local.remote_copy = replica.model_dump(mode="json")
        local.sync_state = SyncState.ST_COLLISION.value
    elif step.becomes in (SyncState.ST_OK, SyncState.ST_DEL_SYNCED):
        if replica.version > local.version or (
            current is SyncState.ST_OK and replica.version != local.version
        ):
            _take(local, replica)
            mark_changed(local)
        local.sync_state = step.becomes.value
        local.peer_version = max(local.peer_version or 0, replica.version)
        ack = replica.version
    elif step.becomes is SyncState.ST_ERROR_SYNCED:
        local.sync_state = step.becomes.value
        local.sync_error = replica.sync_error or "the peer reported an error for this order"
    else:  # ST_ERROR: a combination the seed's table does not allow
        local.sync_state = SyncState.ST_ERROR.value
        local.sync_error = f"received {sent.name} while {current.name if current else 'absent'}"
    return _answer(local, ack)


async def acknowledge(
    session: AsyncSession, order_id: uuid.UUID, pushed_version: int, answer: SyncAnswer
) -> None:
    """Take the peer's answer to a push into account; commit."""
    await acknowledge_batch(session, [(order_id, pushed_version, answer)])


async def acknowledge_batch(
    session: AsyncSession, answers: list[tuple[uuid.UUID, int, SyncAnswer | str]]
) -> None:
    """Take the peer's answers to pushed versions into account, in one transaction. An answer
    given as text is the peer's refusal of that order (kept pending, with the error)."""

    async def apply(locals_: dict[uuid.UUID, Order]) -> None:
        for order_id, pushed_version, answer in answers:
            local = locals_.get(order_id)
            if local is None:
                continue
            if isinstance(answer, str):
                local.sync_error = answer
                # To the back of the push queue: refused orders cannot hold the others back.
                local.synced_at = utcnow()
            else:
                _acknowledge(local, pushed_version, answer)

    await _in_one_transaction(session, {order_id for order_id, _, _ in answers}, apply)


def _acknowledge(local: Order, pushed_version: int, answer: SyncAnswer) -> None:
    peer_state = SyncState[answer.state]
    if peer_state is SyncState.ST_COLLISION:
        local.sync_state = SyncState.ST_COLLISION.value
        if answer.order is not None:
            local.remote_copy = answer.order.model_dump(mode="json")
    elif local.version != pushed_version:
        # Changed again while the push was on its way: the newer version goes next round.
        if answer.ack_version is not None:
            local.peer_version = max(local.peer_version or 0, answer.ack_version)
    elif SyncState(local.sync_state) in SETTLED and (local.peer_version or 0) >= pushed_version:
        # Already acknowledged (through the feed, or an earlier answer to the same version):
        # a second acknowledgement is not a transition (the seed's table would call it an error).
        pass
    else:
        step = transition(peer_state, SyncState(local.sync_state))
        local.sync_state = step.becomes.value
        if step.becomes is SyncState.ST_ERROR:
            local.sync_error = f"the peer answered {peer_state.name} to {SyncState(local.sync_state).name}"
        if answer.ack_version is not None:
            local.peer_version = max(local.peer_version or 0, answer.ack_version)
            local.resolution_pending = False
            local.remote_copy = None
        local.synced_at = utcnow()


async def resolve(session: AsyncSession, order_id: uuid.UUID, data: ResolveIn, *, instance: str) -> Order:
    """End a collision (or an error): keep the local copy, take the peer's, or save a merged
    edit. The result is a new version, pushed to the peer, which takes it over its own copy."""
    local = await session.get(Order, order_id, with_for_update=True)
    if local is None:
        raise NotFound(f"No order {order_id}")
    if SyncState(local.sync_state) not in RESOLVABLE:
        raise Conflict(
            f"Order {order_id} is not in collision or error (state {SyncState(local.sync_state).name})"
        )
    remote = (
        Replica.model_validate(local.remote_copy | {"sync_state": "ST_UPD"}) if local.remote_copy else None
    )
    top = max(local.version, remote.version if remote else 0)
    if data.take == "remote":
        if remote is None:
            raise Conflict("There is no copy from the peer to take")
        _apply(local, remote.as_order_in())
        local.deleted = remote.deleted
    elif data.take == "merged":
        if data.order is None:
            raise Conflict('"merged" needs the order as it should be in "order"')
        _apply(local, data.order)
    local.version = top + 1
    local.changed_by = instance
    local.updated_at = utcnow()
    local.remote_copy = None
    local.sync_error = None
    local.resolution_pending = True
    local.sync_state = (SyncState.ST_DEL if local.deleted else SyncState.ST_UPD).value
    mark_changed(local)
    await session.commit()
    return local


class PeerError(Exception):
    """The peer could not be reached or answered 5xx: the round stops and is retried later."""


@dataclass
class RoundResult:
    pulled: int = 0
    pushed: int = 0
    failed: int = 0
    # Stopped at SYNC_ROUND_STEPS with work left: the loop starts the next round at once.
    more: bool = False
    # Another replica of this instance was running a round: this one did nothing.
    skipped: bool = False


def _batch_answer(item: dict[str, Any]) -> SyncAnswer | str:
    """One entry of the peer's answer to a batch: a SyncAnswer, or its refusal of that order."""
    if item.get("error"):
        return f"peer refused it: {item['error']}"[:1000]
    return SyncAnswer.model_validate(item)


class _NoLease:
    """Stands for the lease when Redis was unreachable: nothing to renew or release."""


_NO_LEASE: Any = _NoLease()


class RoundBusy(Exception):
    """Another replica of this instance has been running a round for longer than a lease."""


class OrderSync:
    """The sync loop of one instance with its peer.

    Replicas of one instance (one database, one Redis) run their rounds one at a time under a
    Redis lease: a replica whose loop finds the lease taken skips that round (another one is
    doing the work), and `POST /v1/sync/run` waits for it. Without it the replicas would push
    the same pending orders at once (harmless, answered as repeats, but twice the traffic).
    """

    def __init__(
        self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.peer = (settings.sync_peer_url or "").rstrip("/")
        self.me = settings.instance_name
        key = settings.sync_peer_api_key.get_secret_value() if settings.sync_peer_api_key else ""
        self.http = httpx.AsyncClient(
            base_url=self.peer, headers={"X-API-Key": key}, timeout=settings.sync_timeout
        )
        self._round_lock = asyncio.Lock()
        self.wake = asyncio.Event()
        # Renewed after every step of a round; a step takes at most a few request timeouts.
        self.lease_seconds = max(30.0, 4 * settings.sync_timeout)
        peer_id = hashlib.sha256(self.peer.encode()).hexdigest()[:16]
        self._lease_key = redis_key(settings, "sync", "round", peer_id)

    async def _take_lease(self, *, wait: bool) -> Lock | None:
        """The replicas' round lease; None when another replica holds it (and `wait` is false).
        With Redis unreachable the round runs without it (safe, only possibly doubled)."""
        lease = self.redis.lock(
            self._lease_key,
            timeout=self.lease_seconds,
            sleep=0.05,
            blocking=wait,
            blocking_timeout=self.lease_seconds + 1.0 if wait else None,
        )
        try:
            if await lease.acquire():
                return lease
        except RedisError as exc:
            logger.warning(
                "order sync: Redis unreachable (%r); this round runs without the replicas' lease", exc
            )
            return _NO_LEASE
        if wait:
            raise RoundBusy(
                f"a sync round has held the lease on another replica for over {self.lease_seconds:.0f} s"
            )
        return None

    @property
    def enabled(self) -> bool:
        return bool(self.peer)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _peer_row(self, session: AsyncSession) -> SyncPeer:
        row = await session.get(SyncPeer, self.peer)
        if row is None:
            row = SyncPeer(peer_url=self.peer, cursor=0, pulled=0, pushed=0, peer_head=0)
            session.add(row)
            await session.flush()
        return row

    async def _request(self, kind: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            SYNC_REQUESTS.labels(kind, "unreachable").inc()
            raise PeerError(f"{method} {self.peer}{url}: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code in (401, 403, 404, 429):
            SYNC_REQUESTS.labels(kind, str(response.status_code)).inc()
            raise PeerError(f"{method} {self.peer}{url}: {response.status_code} {response.text[:300]}")
        SYNC_REQUESTS.labels(kind, str(response.status_code)).inc()
        return response

    async def pull_page(self) -> int:
        """Read one page of the peer's feed from the durable cursor and apply it, the cursor
        moving in the same transaction; return how many changes were read."""
        async with self.sessionmaker() as session:
            cursor = (await self._peer_row(session)).cursor
            await session.commit()
        response = await self._request(
            "pull", "GET", "/v1/orders", params={"since": cursor, "limit": self.settings.sync_batch_size}
        )
        page = orjson.loads(response.content)
        items: list[dict[str, Any]] = page["items"]
        next_since = int(page["next_since"])
        head = int(page.get("head") or next_since)
        by_id = {uuid.UUID(item["id"]): item for item in items}  # a page holds an order once

        async def apply(locals_: dict[uuid.UUID, Order]) -> None:
            for order_id, item in by_id.items():
                self._apply_pulled(session, locals_, order_id, item)
            row = await self._peer_row(session)
            row.cursor = max(row.cursor, next_since)
            row.peer_head = max(row.peer_head or 0, head)
            row.pulled += len(items)

        async with self.sessionmaker() as session:
            await _in_one_transaction(session, set(by_id), apply)
        return len(items)

    def _apply_pulled(
        self,
        session: AsyncSession,
        locals_: dict[uuid.UUID, Order],
        order_id: uuid.UUID,
        item: dict[str, Any],
    ) -> None:
        local = locals_.get(order_id)
        if item["changed_by"] == self.me:
            # Our own change as the peer holds it: an acknowledgement if still pending here.
            state = SyncState(local.sync_state) if local is not None else None
            if local is not None and local.version == item["version"] and state in ACKNOWLEDGED:
                local.sync_state = ACKNOWLEDGED[state].value
                local.peer_version = item["version"]
                local.resolution_pending = False
                local.synced_at = utcnow()
            return
        if local is not None and (
            (local.peer_version or 0) >= item["version"]
            or SyncState(local.sync_state) is SyncState.ST_COLLISION
        ):
            return  # already held; collisions are settled by pushes, not the feed
        if local is None:
            sent = SyncState.ST_NEW
        else:
            sent = SyncState.ST_DEL if item["deleted"] else SyncState.ST_UPD
        try:
            replica = Replica.model_validate({**item, "sync_state": sent.name})
        except ValueError as exc:
            logger.warning("order %s from the peer's feed is not valid here: %s", order_id, exc)
            return
        answer = _receive(session, locals_, replica)
        SYNC_RECEIVED.labels(answer.state).inc()

    async def push_step(self) -> tuple[int, int, int]:
        """Send up to SYNC_PUSH_CONCURRENCY batches of the local changes not yet acknowledged,
        at once: new orders by POST, changed and deleted ones by PUT, each batch acknowledged
        from the peer's answers in one transaction. Return (sent, refused, selected)."""
        size = self.settings.sync_batch_size
        async with self.sessionmaker() as session:
            rows = (
                await session.scalars(
                    select(Order)
                    .where(Order.sync_state.in_([s.value for s in RETRIED]))
                    # Never answered first, then the longest without an answer: an order the
                    # peer refuses goes behind the others each time.
                    .order_by(Order.synced_at.asc().nulls_first(), Order.updated_at, Order.id)
                    .limit(size * self.settings.sync_push_concurrency)
                )
            ).all()
            replicas = [replica_of(o) for o in rows]
            await session.commit()
        new = [r for r in replicas if r["sync_state"] == SyncState.ST_NEW.name]
        changed = [r for r in replicas if r["sync_state"] != SyncState.ST_NEW.name]
        batches = [("POST", new[i : i + size]) for i in range(0, len(new), size)]
        batches += [("PUT", changed[i : i + size]) for i in range(0, len(changed), size)]
        sent = refused = 0

        async def one(method: str, batch: list[dict[str, Any]]) -> None:
            nonlocal sent, refused
            response = await self._request(
                "push",
                method,
                "/v1/sync/orders/batch",
                content=orjson.dumps(batch),
                headers={"Content-Type": "application/json"},
            )
            if response.status_code >= 400:
                error = f"peer answered {response.status_code}: {response.text[:500]}"
                answers: list[SyncAnswer | str] = [error] * len(batch)
            else:
                answers = [_batch_answer(item) for item in orjson.loads(response.content)]
            async with self.sessionmaker() as session:
                await acknowledge_batch(
                    session,
                    [
                        (uuid.UUID(r["id"]), r["version"], answer)
                        for r, answer in zip(batch, answers, strict=True)
                    ],
                )
                row = await self._peer_row(session)
                failed = sum(1 for answer in answers if isinstance(answer, str))
                row.pushed += len(batch) - failed
                await session.commit()
            sent += len(batch) - failed
            refused += failed

        results = await asyncio.gather(*(one(m, b) for m, b in batches), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return sent, refused, len(replicas)

    async def run_once(self, *, wait: bool = True) -> RoundResult:
        """One round: a page of the peer's feed, then a push of pending changes, again until
        both are caught up, at most SYNC_ROUND_STEPS times (the next round starts at once
        then): under steady writes neither half can keep the other waiting.

        Under the replicas' lease: with `wait` false, a round another replica is running makes
        this one a no-op (`skipped`)."""
        async with self._round_lock:
            lease = await self._take_lease(wait=wait)
            if lease is None:
                return RoundResult(skipped=True)
            try:
                return await self._round(lease)
            finally:
                if lease is not _NO_LEASE:
                    with contextlib.suppress(LockError, RedisError):
                        await lease.release()

    async def _round(self, lease: Lock) -> RoundResult:
        result = RoundResult()
        started = utcnow()
        capacity = self.settings.sync_batch_size * self.settings.sync_push_concurrency
        try:
            for _ in range(self.settings.sync_round_steps):
                pulled = await self.pull_page()
                sent, refused, selected = await self.push_step()
                result.pulled += pulled
                result.pushed += sent
                result.failed += refused
                if pulled < self.settings.sync_batch_size and (selected < capacity or sent == 0):
                    break
                if not await self._renew(lease):
                    result.more = True
                    break
            else:
                result.more = True
        except PeerError as exc:
            await self._record(started, error=str(exc))
            raise
        await self._record(started, error=None)
        return result

    async def _renew(self, lease: Lock) -> bool:
        """Extend the lease for the next step; False if it was lost (the step outlasted it and
        another replica may have started): this round then stops."""
        if lease is _NO_LEASE:
            return True
        try:
            await lease.reacquire()
            return True
        except LockError:
            logger.warning("order sync: the round's lease expired during a step; the round stops here")
            return False
        except RedisError:
            return True

    async def _record(self, started: Any, *, error: str | None) -> None:
        async with self.sessionmaker() as session:
            row = await self._peer_row(session)
            row.last_run_at = started
            if error is None:
                row.last_success_at = utcnow()
            else:
                row.last_error, row.last_error_at = error, utcnow()
            await session.commit()

    def _backoff(self, delay: float) -> float:
        """The wait after a failed round: doubling, capped, never shorter than the interval."""
        return max(self.settings.sync_interval, min(delay * 2, self.settings.sync_max_backoff))

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.settings.sync_interval
        while not stop.is_set():
            try:
                if (await self.run_once(wait=False)).more:
                    continue
                delay = self.settings.sync_interval
            except asyncio.CancelledError:
                raise
            except PeerError as exc:
                logger.warning("order sync with %s failed: %s; next try in %.0f s", self.peer, exc, delay)
                delay = self._backoff(delay)
            except Exception:
                logger.exception("order sync round failed")
                delay = self._backoff(delay)
            waiter = asyncio.create_task(self.wake.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            self.wake.clear()

    async def status(self) -> dict[str, Any]:
        async with self.sessionmaker() as session:
            row = await session.get(SyncPeer, self.peer) if self.enabled else None
            counts = dict(
                (
                    await session.execute(select(Order.sync_state, func.count()).group_by(Order.sync_state))
                ).all()
            )
            pending = sum(counts.get(s.value, 0) for s in RETRIED)
            oldest_pending = await session.scalar(
                select(func.min(Order.updated_at)).where(Order.sync_state.in_([s.value for s in RETRIED]))
            )
        now = utcnow()
        last_success = row.last_success_at if row else None
        return {
            "instance": self.me,
            "peer_url": self.peer or None,
            "enabled": self.enabled,
            "cursor": row.cursor if row else 0,
            "pending_push": pending,
            "last_run_at": row.last_run_at if row else None,
            "last_success_at": row.last_success_at if row else None,
            "last_error": row.last_error if row else None,
            "last_error_at": row.last_error_at if row else None,
            "pulled_total": row.pulled if row else 0,
            "pushed_total": row.pushed if row else 0,
            "counts": {s.name: counts.get(s.value, 0) for s in SyncState},
            "lag": {
                # Positions of the peer's feed not read yet, as of the last page read.
                "pull_behind": max((row.peer_head or 0) - row.cursor, 0) if row else 0,
                "push_pending": pending,
                # How long the oldest local change the peer has not acknowledged has waited.
                "oldest_pending_seconds": round((now - oldest_pending).total_seconds(), 3)
                if oldest_pending
                else 0.0,
                "seconds_since_success": round((now - last_success).total_seconds(), 3)
                if last_success
                else None,
            },
        }
