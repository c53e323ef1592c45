"""The airlock's tables: stored calls, their attempt/edit log, connector settings, webhook secrets.

The AsyncCall row holds what the seed lists (connector, view, parameters, content type, body,
client, status, reply URL, response, ttl, delay, next_try) plus the lease of the worker that
holds it. Bodies are bytes: the partner's answer need not be JSON.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class CallStatus(StrEnum):
    CALL_RETRY = "CALL_RETRY"
    RESPONSE_RETRY = "RESPONSE_RETRY"
    DONE = "DONE"
    CALL_ERROR = "CALL_ERROR"
    RESPONSE_ERROR = "RESPONSE_ERROR"
    CANCELLED = "CANCELLED"


PENDING_STATUSES = (CallStatus.CALL_RETRY, CallStatus.RESPONSE_RETRY)
FINISHED_STATUSES = (CallStatus.DONE, CallStatus.CALL_ERROR, CallStatus.RESPONSE_ERROR, CallStatus.CANCELLED)


class AsyncCall(Base):
    __tablename__ = "async_call"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    connector: Mapped[str] = mapped_column(String(100))
    # The gateway operation (route name) that is replayed, with everything it was called with.
    view_name: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(2000))
    path_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    query_string: Mapped[str] = mapped_column(Text, default="")
    # The caller's headers that the operation reads (credentials and hop-by-hop headers left out).
    request_headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    content_type: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_client_id: Mapped[str] = mapped_column(String(64))
    api_client_name: Mapped[str] = mapped_column(String(200))
    org_id: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(20))
    reply_url: Mapped[str | None] = mapped_column(String(2000))
    # True when the caller asked for it (Prefer: respond-async) rather than after a failure.
    respond_async: Mapped[bool] = mapped_column(Boolean, default=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_content_type: Mapped[str | None] = mapped_column(String(200))
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    ttl: Mapped[int] = mapped_column(Integer)
    delay: Mapped[float] = mapped_column(Float)
    next_try: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    # Queued by a throttling configuration: the slot reserved for the partner call, on Redis's
    # clock (the worker waits for it and takes no other), and the runtime version it was reserved under (calls of
    # a version undeployed 24 hours ago are dropped).
    throttle_slot: Mapped[datetime | None] = mapped_column(UTCDateTime)
    throttle_uid: Mapped[str | None] = mapped_column(String(36))
    throttle_version: Mapped[int | None] = mapped_column(Integer)
    # The lease: which worker holds the call, and until when (then anyone may take it again).
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # The workers' claim query: due calls of the two retry statuses, by next_try.
        Index(
            "ix_async_call_due",
            "next_try",
            postgresql_where=text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')"),
            sqlite_where=text("status IN ('CALL_RETRY', 'RESPONSE_RETRY')"),
        ),
        Index("ix_async_call_connector_status_created_at", "connector", "status", "created_at"),
        Index("ix_async_call_api_client_id_created_at", "api_client_id", "created_at"),
        Index("ix_async_call_finished_at", "finished_at"),
        Index(
            "ix_async_call_throttle",
            "throttle_uid",
            "throttle_version",
            postgresql_where=text("throttle_slot IS NOT NULL"),
            sqlite_where=text("throttle_slot IS NOT NULL"),
        ),
    )

    def __str__(self) -> str:
        return f"{self.view_name} {self.id} ({self.status})"


class AsyncCallLog(Base):
    """One line of a call's history: an attempt, an edit (with its diff) or an operator action."""

    __tablename__ = "async_call_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    call_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("async_call.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # capture, call, reply, edit, action
    phase: Mapped[str] = mapped_column(String(20))
    # ok, retry, error, gone, accepted, edited, retried, cancelled, replayed …
    outcome: Mapped[str] = mapped_column(String(30))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(1000))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    next_try: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ttl: Mapped[int | None] = mapped_column(Integer)
    author: Mapped[str | None] = mapped_column(String(200))
    # A unified diff for edits; free text otherwise.
    detail: Mapped[str | None] = mapped_column(Text)


class AirlockConnector(Base):
    """Runtime settings of one connector (upstream), editable without a restart."""

    __tablename__ = "airlock_connector"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    ttl: Mapped[int] = mapped_column(Integer)
    delay: Mapped[float] = mapped_column(Float)
    error_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    error_emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Signs the POSTs to error_urls (Standard Webhooks); shown once, when rotated.
    error_secret: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(200))

    def __str__(self) -> str:
        return self.name


class WebhookSecret(Base):
    """A client's `whsec_` signing secret; a rotated-out one keeps signing until expires_at."""

    __tablename__ = "webhook_secret"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    api_client_id: Mapped[str] = mapped_column(String(64), index=True)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
