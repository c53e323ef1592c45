"""The event a notification is about."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A server-side failure worth telling a human about."""

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
        """Identify "the same failure": ids, title and time are left out so that repeats collapse."""
        parts = (self.code, str(self.status), self.method, self.path, self.partner_code, self.upstream)
        # A separator that cannot occur in the parts keeps ("a", "b|c") and ("a|b", "c") apart.
        return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:16]
