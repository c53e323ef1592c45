from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class CommLogOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    request_id: str | None
    trace_id: str | None
    api_client_id: str | None
    client_id: str | None
    method: str
    path: str
    query: str | None
    request_headers: dict[str, Any] | None
    request_body: str | None
    status: int
    error_code: str | None
    response_body: str | None
    upstream_url: str | None
    upstream_status: int | None
    upstream_duration_ms: float | None
    duration_ms: float


class CommLogPage(BaseModel):
    data: list[CommLogOut]
    meta: dict[str, Any]
