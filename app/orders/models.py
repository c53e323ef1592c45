"""Orders: the business record, its change sequence and its sync bookkeeping.

`version` rises by one on every change wherever it is made (the ETag of If-Match); `change_seq`
orders the change feed: a write leaves it empty and the feed's sequencer numbers committed
changes when the feed is next read, so that position order is commit order and a reader's
cursor never skips a late commit, while writers take no lock. Money is
Decimal: line prices as strings in the `lines` JSON, the total as NUMERIC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, Numeric, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow
from app.orders.sync_states import SyncState


class OrderStatus(StrEnum):
    NEW = "new"
    CONFIRMED = "confirmed"
    PAID = "paid"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    number: Mapped[str] = mapped_column(String(64), index=True)
    customer_name: Mapped[str] = mapped_column(String(200))
    customer_email: Mapped[str] = mapped_column(String(320), index=True)
    # [{"sku", "name", "quantity", "unit_price": "12.50"}]
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    status: Mapped[str] = mapped_column(String(20), default=OrderStatus.NEW.value)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the content last changed (set by the writes; sync bookkeeping leaves it alone).
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The instance the order was created on.
    origin: Mapped[str] = mapped_column(String(64))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # Position in the change feed: empty from the write until the next feed read numbers it
    # (service.sequence_changes).
    change_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    # --- sync bookkeeping --------------------------------------------------------------
    sync_state: Mapped[int] = mapped_column(SmallInteger, default=SyncState.ST_NEW.value)
    # The instance whose change this version is: the local instance, or the peer when the
    # change was applied from it (so it is not sent back: no echo).
    changed_by: Mapped[str] = mapped_column(String(64))
    # The peer's version of this order last applied here or acknowledged by it.
    peer_version: Mapped[int | None] = mapped_column(Integer)
    # During a collision: the peer's copy, kept until someone resolves it.
    remote_copy: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sync_error: Mapped[str | None] = mapped_column(Text)
    # A resolved collision not yet sent: the push tells the peer to take it over its own copy.
    resolution_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the peer last answered about this order (an acknowledgement or a refusal).
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_orders_sync_state", "sync_state"),
        Index("ix_orders_created", "created_at", "id"),
        # The sequencer's queue: committed changes not yet numbered.
        Index(
            "ix_orders_unsequenced",
            "updated_at",
            "id",
            postgresql_where=text("change_seq IS NULL"),
            sqlite_where=text("change_seq IS NULL"),
        ),
    )


class SyncPeer(Base):
    """The sync loop's durable position in the peer's change feed, and how its last runs went."""

    __tablename__ = "sync_peer"

    peer_url: Mapped[str] = mapped_column(String(500), primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pulled: Mapped[int] = mapped_column(BigInteger, default=0)
    pushed: Mapped[int] = mapped_column(BigInteger, default=0)
    # The peer's feed head as its last page said: head - cursor is how far the pull is behind.
    peer_head: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
