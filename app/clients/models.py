from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class ApiClient(Base):
    """A caller of the API. Only a SHA-256 of its key is stored; the key is shown once."""

    __tablename__ = "api_client"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    org_id: Mapped[str] = mapped_column(String(200), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # First characters of the key, to recognise it in listings without revealing it.
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"
