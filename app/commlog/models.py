from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class CommLog(Base):
    """One gateway request and what the partner answered (seed 000, nodes G4, Q1, S1)."""

    __tablename__ = "comm_log"
    __table_args__ = (
        Index("ix_comm_log_created_at", "created_at"),
        Index("ix_comm_log_client_id_id", "client_id", "id"),
        Index("ix_comm_log_status_id", "status", "id"),
        Index("ix_comm_log_error_code_id", "error_code", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    request_id: Mapped[str | None] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    api_client_id: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    query: Mapped[str | None] = mapped_column(Text)
    request_headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    request_body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    response_body: Mapped[str | None] = mapped_column(Text)
    upstream_url: Mapped[str | None] = mapped_column(String(1000))
    upstream_status: Mapped[int | None] = mapped_column(Integer)
    upstream_duration_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)

    def __str__(self) -> str:
        return f"#{self.id} {self.method} {self.path} {self.status}"
