"""The event a notification is about."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str
    status: int
    title: str
    detail: str | None = None
    method: str | None = None
    path: str | None = None
    client_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    partner_code: str | None = None
    partner_message: str | None = None
    upstream: str | None = None
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def fingerprint(self) -> str:
        """Same failure, same fingerprint: ids and times are left out on purpose."""
        parts = (
            self.code,
            str(self.status),
            self.method,
            self.path,
            self.partner_code,
            self.upstream,
            self.title,
        )
        return hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()[:16]
