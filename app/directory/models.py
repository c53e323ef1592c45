"""The service directory: services that DAGs (and anyone) call by name."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class DirectoryService(Base):
    __tablename__ = "directory_service"

    # Like "neorezo-billing_invoice-eshop".
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    base_url: Mapped[str] = mapped_column(String(2000))
    stage: Mapped[str] = mapped_column(String(50), default="prod")
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Checked by the health loop; unset: no check (status "unknown").
    health_url: Mapped[str | None] = mapped_column(String(2000))
    # The credentials to call the service (a token, a key), encrypted with DIRECTORY_SECRET_KEY
    # (Fernet): returned to clients with the `directory_credentials` scope, never logged.
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    health_status: Mapped[str] = mapped_column(String(20), default="unknown")
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_health_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
