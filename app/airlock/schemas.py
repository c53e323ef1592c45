from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from app.airlock.models import AsyncCall, AsyncCallLog


def _response_part(status: int | None, content_type: str | None, body: bytes | None) -> dict[str, Any] | None:
    if status is None:
        return None
    part: dict[str, Any] = {"status": status, "content_type": content_type}
    if content_type and "json" in content_type:
        try:
            part["data"] = orjson.loads(body) if body else None
            return part
        except orjson.JSONDecodeError:
            pass
    part["b64_body"] = base64.b64encode(body or b"").decode()
    return part


class AsyncCallOut(BaseModel):
    """An async call as its caller sees it."""

    reply_id: uuid.UUID = Field(serialization_alias="$reply_id")
    status: str
    connector: str
    operation: str
    method: str
    path: str
    attempts: int
    ttl: int
    next_try: datetime | None
    reply_url: str | None
    respond_async: bool
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    response: dict[str, Any] | None = Field(
        description="Once the call has an answer: status, content_type, and data (JSON) or b64_body"
    )

    @classmethod
    def of(cls, call: AsyncCall) -> AsyncCallOut:
        pending = call.status in ("CALL_RETRY", "RESPONSE_RETRY")
        return cls(
            reply_id=call.id,
            status=call.status,
            connector=call.connector,
            operation=call.view_name,
            method=call.method,
            path=call.path,
            attempts=call.attempts,
            ttl=call.ttl,
            next_try=call.next_try if pending else None,
            reply_url=call.reply_url,
            respond_async=call.respond_async,
            last_error=call.last_error,
            created_at=call.created_at,
            updated_at=call.updated_at,
            finished_at=call.finished_at,
            response=_response_part(call.response_status, call.response_content_type, call.response_body),
        )


class AsyncCallPage(BaseModel):
    data: list[AsyncCallOut]
    meta: dict[str, Any]


class LogLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    phase: str
    outcome: str
    http_status: int | None
    error: str | None
    latency_ms: float | None
    next_try: datetime | None
    ttl: int | None
    author: str | None
    detail: str | None

    @classmethod
    def of(cls, line: AsyncCallLog) -> LogLineOut:
        return cls.model_validate(line)


class AsyncCallDetail(AsyncCallOut):
    """The backoffice view: the request as stored, JSON pretty-printed, and the whole log."""

    api_client_id: str
    api_client_name: str
    org_id: str
    request_id: str | None
    query_string: str
    request_headers: dict[str, str]
    content_type: str | None
    request_body: str
    response_body: str
    locked_by: str | None
    locked_until: datetime | None
    log: list[LogLineOut]


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: Literal["CALL_RETRY", "RESPONSE_RETRY"] | None = Field(
        None, description="Default: RESPONSE_RETRY for a call whose reply failed, else CALL_RETRY"
    )


class BulkRetryIn(RetryIn):
    ids: list[uuid.UUID] | None = Field(None, max_length=1000)
    connector: str | None = None
    status: Literal["CALL_ERROR", "RESPONSE_ERROR", "CALL_RETRY", "RESPONSE_RETRY"] | None = None

    @model_validator(mode="after")
    def _something_selected(self) -> BulkRetryIn:
        if not self.ids and not self.status:
            raise ValueError("give ids, or a status (with an optional connector) to select calls")
        return self


class EditIn(BaseModel):
    """New contents: JSON values as `body`/`response`, other bytes base64 in `*_b64`."""

    model_config = ConfigDict(extra="forbid")

    body: Any = None
    body_b64: str | None = None
    response: Any = None
    response_b64: str | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> EditIn:
        if self.body is not None and self.body_b64 is not None:
            raise ValueError("give body or body_b64, not both")
        if self.response is not None and self.response_b64 is not None:
            raise ValueError("give response or response_b64, not both")
        if all(v is None for v in (self.body, self.body_b64, self.response, self.response_b64)):
            raise ValueError("nothing to edit: give body, body_b64, response or response_b64")
        return self

    @staticmethod
    def _bytes(value: Any, b64: str | None) -> bytes | None:
        if b64 is not None:
            try:
                return base64.b64decode(b64, validate=True)
            except ValueError:
                raise ValueError("not valid base64") from None
        return orjson.dumps(value) if value is not None else None

    def new_body(self) -> bytes | None:
        return self._bytes(self.body, self.body_b64)

    def new_response(self) -> bytes | None:
        return self._bytes(self.response, self.response_b64)


class ConnectorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: int | None = Field(None, ge=1, le=100)
    delay: float | None = Field(None, gt=0, le=86_400)
    error_urls: list[str] | None = Field(None, max_length=20)
    error_emails: list[EmailStr] | None = Field(None, max_length=50)


class ConnectorOut(BaseModel):
    name: str
    ttl: int
    delay: float
    error_urls: list[str]
    error_emails: list[str]
    retries_for_seconds: float = Field(description="How long a call keeps being retried: delay × (2^ttl − 1)")
    updated_at: datetime | None = None
    updated_by: str | None = None


class SecretOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    expires_at: datetime | None
    hint: str = Field(description="The secret's first characters")


class NewSecretOut(SecretOut):
    secret: str = Field(description="Shown once: verify the webhook-signature of replies with it")
