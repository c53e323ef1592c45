"""Throttling configurations (seed 004) and their runtime versions.

A `ThrottlingConfig` is what the authoring API edits: one per organisation. Deploying it
creates a `ThrottlingRuntime` row (version 1, 2, …) that the limiters of every replica enforce.
Updating a deployed config changes its active runtime row at once; undeploying marks the row
inactive, and it is deleted 24 hours later (calls queued under it are then dropped).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class ConfigState(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DEPLOYED = "deployed"
    UNDEPLOYED = "undeployed"


class ThrottlingConfig(Base):
    __tablename__ = "throttling_config"
    # The original allows one configuration per organisation (error 1465).
    __table_args__ = (UniqueConstraint("org_id", name="uq_throttling_config_org"),)

    uid: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(200))
    sandbox_id: Mapped[str] = mapped_column(String(36))
    sandbox_name: Mapped[str] = mapped_column(String(100))
    name: Mapped[str | None] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    url_pattern: Mapped[str] = mapped_column(String(2000))
    methods: Mapped[list[str]] = mapped_column(JSON)
    max_throughput: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default=ConfigState.CREATED)
    has_been_deployed: Mapped[bool] = mapped_column(Boolean, default=False)
    # The runtime version last deployed (0: never); the read shows it as "<n>.0".
    runtime_version: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(200))
    created_by_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_modified_by: Mapped[str] = mapped_column(String(200))
    last_modified_by_id: Mapped[str] = mapped_column(String(200))
    last_modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_deployed_by: Mapped[str | None] = mapped_column(String(200))
    last_deployed_by_id: Mapped[str | None] = mapped_column(String(200))
    last_deployed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __str__(self) -> str:
        return f"{self.name or self.uid} ({self.state})"


class ThrottlingRuntime(Base):
    """What the limiters enforce: a deployed version of a config."""

    __tablename__ = "throttling_runtime"
    __table_args__ = (UniqueConstraint("config_uid", "version", name="uq_throttling_runtime_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key cascade: a forced delete keeps draining runtime rows for their 24 hours.
    config_uid: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer)
    org_id: Mapped[str] = mapped_column(String(200), index=True)
    url_pattern: Mapped[str] = mapped_column(String(2000))
    methods: Mapped[list[str]] = mapped_column(JSON)
    max_throughput: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    deployed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    undeployed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
