"""Orders: creation, conditional updates, tombstones, listing and the change feed."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from sqlalchemy import func, or_, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import BadRequest, Conflict, NotFound, PreconditionFailed, PreconditionRequired
from app.orders.models import Order
from app.orders.schemas import OrderIn
from app.orders.sync_states import SyncState

# pg_advisory_xact_lock key serialising the feed's sequencers (any constant will do; this one
# spells "ORDR"). Writers never take it.
CHANGE_LOCK = 0x4F524452
# At most this many changes get their feed positions per sequencer run (the next read goes on).
SEQUENCE_CAP = 50_000
MAX_PAGE = 1000
# Feed positions are BIGINT.
MAX_POSITION = 2**63 - 1


def etag(order: Order) -> str:
    return f'"{order.version}"'


def check_if_match(order: Order, if_match: str | None, *, required: bool) -> None:
    """RFC 9110 If-Match with strong comparison; `*` matches any existing order."""
    if if_match is None:
        if required:
            raise PreconditionRequired(
                f"Send If-Match: {etag(order)} (the version you read) to change this order"
            )
        return
    tags = [tag.strip() for tag in if_match.split(",")]
    if "*" in tags or etag(order) in tags:
        return
    raise PreconditionFailed(
        f"The order is at version {order.version}; you sent If-Match: {if_match}",
        headers={"ETag": etag(order)},
        extra={"current_version": order.version},
    )


def mark_changed(order: Order) -> None:
    """Put the order's change in the feed's queue: it gets its feed position once committed.

    Writers take no lock and no position: `sequence_changes` numbers the changes after they
    commit, so positions follow commit order and a reader's cursor never skips a change that
    committed late (a position handed out inside the writing transaction could be passed by a
    reader before that transaction commits).
    """
    order.change_seq = None


async def sequence_changes(session: AsyncSession) -> int:
    """Give every committed change still without a feed position the next positions; commit.

    Run by feed readers before they read. Sequencers serialise on a transaction-scoped
    advisory lock held through their commit, so positions are visible in the order they were
    handed out. A change whose row a writer holds locked right now is skipped (SKIP LOCKED):
    that writer leaves it without a position and the next run numbers it. SQLite has one
    writer at a time.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHANGE_LOCK})
        result = await session.execute(
            text(
                "UPDATE orders SET change_seq = nextval('orders_change_seq') FROM ("
                " SELECT id FROM orders WHERE change_seq IS NULL ORDER BY updated_at, id"
                " LIMIT :cap FOR UPDATE SKIP LOCKED) AS pending"
                " WHERE orders.id = pending.id"
            ),
            {"cap": SEQUENCE_CAP},
        )
        numbered = int(result.rowcount or 0)  # type: ignore[attr-defined]
    else:
        pending = list(
            (
                await session.scalars(
                    select(Order.id)
                    .where(Order.change_seq.is_(None))
                    .order_by(Order.updated_at, Order.id)
                    .limit(SEQUENCE_CAP)
                )
            ).all()
        )
        top = (await session.scalar(select(func.max(Order.change_seq)))) or 0
        for position, order_id in enumerate(pending, start=top + 1):
            await session.execute(sql_update(Order).where(Order.id == order_id).values(change_seq=position))
        numbered = len(pending)
    await session.commit()
    return numbered


def _apply(order: Order, data: OrderIn) -> None:
    order.customer_name = data.customer.name
    order.customer_email = str(data.customer.email)
    order.lines = data.stored_lines()
    order.currency = data.currency
    order.total = data.total()
    order.status = data.status.value
    order.notes = data.notes
    if data.number is not None:
        order.number = data.number


def same_content(order: Order, data: OrderIn) -> bool:
    return (
        order.customer_name == data.customer.name
        and order.customer_email == str(data.customer.email)
        and order.lines == data.stored_lines()
        and order.currency == data.currency
        and order.status == data.status.value
        and order.notes == data.notes
        and (data.number is None or order.number == data.number)
    )


async def create(session: AsyncSession, data: OrderIn, *, instance: str) -> tuple[Order, bool]:
    """Create the order; (order, created). The same POST again (same id and content) returns the
    existing order; the same id with other content is a conflict."""
    order_id = data.id or uuid.uuid4()
    order = Order(
        id=order_id,
        number=data.number or f"ORD-{order_id.hex[:10].upper()}",
        origin=instance,
        changed_by=instance,
        version=1,
        deleted=False,
        sync_state=SyncState.ST_NEW.value,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    _apply(order, data)
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        # One statement needs no BEGIN and COMMIT around it: in autocommit the INSERT is its own
        # transaction, one round trip to the database instead of three.
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    session.add(order)
    try:
        # Optimistic: a new id (the usual case) costs one INSERT and no lookup first.
        await session.commit()
    except IntegrityError:
        await session.rollback()
        existing = await session.get(Order, order_id) if data.id is not None else None
        if existing is None:
            raise
        if existing.deleted or not same_content(existing, data):
            raise Conflict(
                f"An order with id {data.id} already exists with other content"
                + (" (deleted)" if existing.deleted else ""),
                extra={"current_version": existing.version},
            ) from None
        return existing, False
    return order, True


async def get(session: AsyncSession, order_id: uuid.UUID, *, include_deleted: bool = False) -> Order:
    order = await session.get(Order, order_id)
    if order is None or (order.deleted and not include_deleted):
        raise NotFound(f"No order {order_id}")
    return order


async def _for_change(session: AsyncSession, order_id: uuid.UUID) -> Order:
    order = await session.get(Order, order_id, with_for_update=True)
    if order is None or order.deleted:
        raise NotFound(f"No order {order_id}")
    if order.sync_state == SyncState.ST_COLLISION:
        raise Conflict(
            "This order is in collision with the peer's copy: resolve it first "
            f"(POST /v1/orders/{order_id}/resolve)"
        )
    return order


def _local_change(order: Order, instance: str, state: SyncState) -> None:
    order.version += 1
    order.changed_by = instance
    order.updated_at = utcnow()
    order.sync_state = state.value
    mark_changed(order)


async def update(
    session: AsyncSession, order_id: uuid.UUID, data: OrderIn, *, if_match: str | None, instance: str
) -> Order:
    if data.id is not None and data.id != order_id:
        raise BadRequest(f"The body's id {data.id} is not the URL's {order_id}")
    order = await _for_change(session, order_id)
    check_if_match(order, if_match, required=True)
    if same_content(order, data):
        return order  # nothing changed: no new version, nothing to sync
    _apply(order, data)
    # Not yet acknowledged by the peer: it is still new to it.
    state = SyncState.ST_NEW if order.sync_state == SyncState.ST_NEW else SyncState.ST_UPD
    _local_change(order, instance, state)
    await session.commit()
    return order


async def delete(session: AsyncSession, order_id: uuid.UUID, *, if_match: str | None, instance: str) -> Order:
    """Mark the order deleted (a tombstone the peer reads in the change feed)."""
    order = await _for_change(session, order_id)
    check_if_match(order, if_match, required=False)
    order.deleted = True
    _local_change(order, instance, SyncState.ST_DEL)
    await session.commit()
    return order


def _encode_cursor(order: Order) -> str:
    raw = f"{order.created_at.isoformat()}|{order.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, ident = raw.partition("|")
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has its offset")
        return moment, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("Invalid cursor: pass next_cursor from the previous page") from exc


async def list_orders(
    session: AsyncSession,
    *,
    status: list[str] | None,
    currency: str | None,
    email: str | None,
    q: str | None,
    include_deleted: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[Order], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Order)
    if not include_deleted:
        query = query.where(Order.deleted.is_(False))
    if status:
        query = query.where(Order.status.in_(status))
    if currency:
        query = query.where(Order.currency == currency.upper())
    if email:
        query = query.where(func.lower(Order.customer_email) == email.lower())
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(
            or_(func.lower(Order.number).like(pattern), func.lower(Order.customer_name).like(pattern))
        )
    if cursor:
        when, ident = _decode_cursor(cursor)
        query = query.where(or_(Order.created_at < when, (Order.created_at == when) & (Order.id < ident)))
    rows = list(
        (
            await session.scalars(query.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1))
        ).all()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_encode_cursor(rows[-1]) if more and rows else None)


async def changes(session: AsyncSession, *, since: int, limit: int) -> tuple[list[Order], int, int]:
    """Orders changed after position `since` of the feed (tombstones included), in feed order;
    the position to read from next; and the feed's head (its last position). Changes
    committed since the last read get their positions first."""
    await sequence_changes(session)
    rows = list(
        (
            await session.scalars(
                select(Order).where(Order.change_seq > since).order_by(Order.change_seq).limit(limit)
            )
        ).all()
    )
    next_since = (rows[-1].change_seq or since) if rows else since
    if len(rows) < limit:
        return rows, next_since, next_since  # the page reached the feed's end: that is its head
    head = (await session.scalar(select(func.max(Order.change_seq)))) or 0
    return rows, next_since, max(head, next_since)


def page_limit(limit: int | None) -> int:
    return max(1, min(limit or 50, MAX_PAGE))
