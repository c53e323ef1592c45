"""Store, read, list and act on async calls; connector settings; clients' webhook secrets.

Routers and the admin call these; the delivery loop lives in worker.py. Every change a person
makes (retry, edit, cancel, replay) appends a line to the call's log with its author.
"""

from __future__ import annotations

import base64
import difflib
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.airlock.machine import Schedule
from app.airlock.models import (
    FINISHED_STATUSES,
    AirlockConnector,
    AsyncCall,
    AsyncCallLog,
    CallStatus,
    WebhookSecret,
)
from app.airlock.signing import new_secret
from app.clients.service import Principal
from app.db import utcnow
from app.errors import NotFound, SluiceError
from app.settings import Settings

NOTIFY_CHANNEL = "sluice_airlock"


class CallStateConflict(SluiceError):
    status, code, title = 409, "call_state_conflict", "The call is not in a state that allows this"


# ------------------------------------------------------------------------------ connectors


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    name: str
    ttl: int
    delay: float
    error_urls: list[str]
    error_emails: list[str]
    error_secret: str | None

    def schedule(self, settings: Settings) -> Schedule:
        return Schedule(
            ttl=self.ttl,
            delay=self.delay,
            jitter=settings.airlock_jitter,
            retry_after_max=settings.airlock_retry_after_max,
        )


def default_connector(name: str, settings: Settings) -> ConnectorConfig:
    return ConnectorConfig(name, settings.airlock_ttl, settings.airlock_delay, [], [], None)


async def get_connector(session: AsyncSession, name: str, settings: Settings) -> ConnectorConfig:
    """A connector's settings: its stored row, or the defaults of the settings."""
    row = await session.get(AirlockConnector, name)
    if row is None:
        return default_connector(name, settings)
    return ConnectorConfig(
        row.name, row.ttl, row.delay, list(row.error_urls), list(row.error_emails), row.error_secret
    )


async def list_connectors(session: AsyncSession) -> Sequence[AirlockConnector]:
    """Every connector with stored settings."""
    return (await session.scalars(select(AirlockConnector).order_by(AirlockConnector.name))).all()


async def update_connector(
    session: AsyncSession, name: str, settings: Settings, author: str, **values: Any
) -> AirlockConnector:
    """Create or change a connector's stored settings (only the given values).

    Concurrent first writes of one connector must not collide on its key: the row is created
    if missing with INSERT … ON CONFLICT DO NOTHING, then changed under its row lock (the last
    writer wins, as PUT means)."""
    defaults = {
        "name": name,
        "ttl": settings.airlock_ttl,
        "delay": settings.airlock_delay,
        "error_urls": [],
        "error_emails": [],
        "error_secret": new_secret(),
        "updated_at": utcnow(),
        "updated_by": author,
    }
    bind = session.get_bind()
    dialect_insert = postgresql_insert if bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        dialect_insert(AirlockConnector).values(**defaults).on_conflict_do_nothing(index_elements=["name"])
    )
    row = await session.get(AirlockConnector, name, with_for_update=True, populate_existing=True)
    assert row is not None  # created above, and connectors are never deleted
    for key, value in values.items():
        if value is not None:
            setattr(row, key, value)
    row.updated_at = utcnow()
    row.updated_by = author
    await session.flush()
    return row


async def rotate_connector_secret(session: AsyncSession, name: str, settings: Settings, author: str) -> str:
    """A new secret for the connector's error URLs (returned once)."""
    row = await update_connector(session, name, settings, author)
    row.error_secret = new_secret()
    await session.flush()
    return row.error_secret


class ConnectorCache:
    """Connector settings for the delivery loop, re-read every few seconds (runtime edits)."""

    def __init__(self, settings: Settings, ttl: float = 5.0) -> None:
        self._settings = settings
        self._ttl = ttl
        self._cache: dict[str, tuple[ConnectorConfig, float]] = {}
        # Connectors being read again: meanwhile the others keep the previous settings, rather
        # than every call in flight querying the database the moment the entry expires.
        self._refreshing: set[str] = set()

    def cached(self, name: str) -> ConnectorConfig | None:
        """The connector's settings if they need not be read now (no session needed)."""
        hit = self._cache.get(name)
        if hit is not None and (hit[1] > time.monotonic() or name in self._refreshing):
            return hit[0]
        return None

    async def get(self, session: AsyncSession, name: str) -> ConnectorConfig:
        hit = self.cached(name)
        if hit is not None:
            return hit
        self._refreshing.add(name)
        try:
            config = await get_connector(session, name, self._settings)
        finally:
            self._refreshing.discard(name)
        self._cache[name] = (config, time.monotonic() + self._ttl)
        return config


# ------------------------------------------------------------------------------ secrets


async def signing_secrets(session: AsyncSession, api_client_id: str, now: datetime) -> list[str]:
    """The client's live `whsec_` secrets, newest first (one is created if it has none)."""
    query = (
        select(WebhookSecret)
        .where(
            WebhookSecret.api_client_id == api_client_id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.created_at.desc())
    )
    rows = (await session.scalars(query)).all()
    if not rows and session.get_bind().dialect.name == "postgresql":
        # Replies of a client without a secret, delivered at once (by any number of workers),
        # must not each create one: every live secret signs every reply. One transaction at a
        # time per client gets here; the others then see the secret it committed.
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"webhook_secret:{api_client_id}"}
        )
        rows = (await session.scalars(query)).all()
    if rows:
        return [r.secret for r in rows]
    row = WebhookSecret(api_client_id=api_client_id, secret=new_secret(), created_at=now)
    session.add(row)
    await session.flush()
    return [row.secret]


async def live_secrets(
    session: AsyncSession, api_client_ids: Collection[str], now: datetime
) -> dict[str, list[str]]:
    """The live secrets of several clients at once, newest first; a client without any is left
    out (unlike `signing_secrets`, nothing is created)."""
    if not api_client_ids:
        return {}
    rows = await session.execute(
        select(WebhookSecret.api_client_id, WebhookSecret.secret)
        .where(
            WebhookSecret.api_client_id.in_(list(api_client_ids)),
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.created_at.desc())
    )
    found: dict[str, list[str]] = {}
    for api_client_id, secret in rows:
        found.setdefault(api_client_id, []).append(secret)
    return found


async def rotate_secret(session: AsyncSession, api_client_id: str, overlap: timedelta) -> WebhookSecret:
    """A new secret for the client; the current ones keep signing for `overlap` (then expire)."""
    now = utcnow()
    await session.execute(
        update(WebhookSecret)
        .where(
            WebhookSecret.api_client_id == api_client_id,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now + overlap),
        )
        .values(expires_at=now + overlap)
    )
    row = WebhookSecret(api_client_id=api_client_id, secret=new_secret(), created_at=now)
    session.add(row)
    await session.flush()
    return row


async def list_secrets(session: AsyncSession, api_client_id: str) -> Sequence[WebhookSecret]:
    """The client's secrets that still sign, newest first."""
    now = utcnow()
    return (
        await session.scalars(
            select(WebhookSecret)
            .where(
                WebhookSecret.api_client_id == api_client_id,
                or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
            )
            .order_by(WebhookSecret.created_at.desc())
        )
    ).all()


# ------------------------------------------------------------------------------ calls


def new_call(
    *,
    connector: str,
    view_name: str,
    method: str,
    path: str,
    path_params: dict[str, Any],
    query_string: str,
    headers: dict[str, str],
    body: bytes | None,
    principal: Principal,
    request_id: str | None,
    reply_url: str | None,
    respond_async: bool,
    schedule: Schedule,
    next_try: datetime,
    now: datetime,
) -> AsyncCall:
    """An AsyncCall in CALL_RETRY, not yet added to a session."""
    return AsyncCall(
        id=uuid.uuid4(),
        connector=connector,
        view_name=view_name,
        method=method,
        path=path,
        path_params=path_params,
        query_string=query_string,
        request_headers=headers,
        content_type=headers.get("content-type"),
        body=body or None,
        api_client_id=principal.id,
        api_client_name=principal.name[:200],
        org_id=principal.org_id[:200],
        request_id=request_id,
        status=CallStatus.CALL_RETRY,
        reply_url=reply_url,
        respond_async=respond_async,
        ttl=schedule.ttl,
        delay=schedule.delay,
        next_try=next_try,
        attempts=0,
        created_at=now,
        updated_at=now,
    )


def log_line(call_id: uuid.UUID, phase: str, outcome: str, **fields: Any) -> AsyncCallLog:
    return AsyncCallLog(
        call_id=call_id, phase=phase, outcome=outcome, at=fields.pop("at", None) or utcnow(), **fields
    )


async def wake_workers(session: AsyncSession) -> None:
    """Tell every replica's delivery loop that a call is due (delivered on commit; Postgres only)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})


async def get_call(
    session: AsyncSession, call_id: uuid.UUID, principal: Principal | None = None
) -> AsyncCall:
    """The call, or 404 (also when `principal` is given and the call is another client's)."""
    call = await session.get(AsyncCall, call_id)
    if call is None or (
        principal is not None and not principal.has("admin") and call.api_client_id != principal.id
    ):
        raise NotFound(f"No async call {call_id}")
    return call


async def call_log(session: AsyncSession, call_id: uuid.UUID) -> Sequence[AsyncCallLog]:
    """The call's log, oldest first."""
    return (
        await session.scalars(
            select(AsyncCallLog).where(AsyncCallLog.call_id == call_id).order_by(AsyncCallLog.id)
        )
    ).all()


def encode_cursor(call: AsyncCall) -> str:
    raw = f"{call.created_at.isoformat()}|{call.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """ValueError if the cursor is not one of ours."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        at, _, ident = base64.urlsafe_b64decode(padded).decode().partition("|")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has its offset")
        return moment, uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not an async-call cursor") from exc


@dataclass(frozen=True, slots=True)
class CallFilter:
    connector: str | None = None
    status: Sequence[str] | None = None
    api_client_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[Any]:
        clauses: list[Any] = []
        if self.connector:
            clauses.append(AsyncCall.connector == self.connector)
        if self.status:
            clauses.append(AsyncCall.status.in_(list(self.status)))
        if self.api_client_id:
            clauses.append(AsyncCall.api_client_id == self.api_client_id)
        if self.since:
            clauses.append(AsyncCall.created_at >= self.since)
        if self.until:
            clauses.append(AsyncCall.created_at < self.until)
        return clauses


async def list_calls(
    session: AsyncSession, filters: CallFilter, *, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> tuple[Sequence[AsyncCall], str | None]:
    """Calls matching `filters`, newest first, and the cursor of the next page."""
    query = select(AsyncCall).where(*filters.clauses())
    if after is not None:
        at, ident = after
        query = query.where(
            or_(AsyncCall.created_at < at, and_(AsyncCall.created_at == at, AsyncCall.id < ident))
        )
    query = query.order_by(AsyncCall.created_at.desc(), AsyncCall.id.desc()).limit(limit + 1)
    rows = (await session.scalars(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


async def count_by_status(session: AsyncSession, connector: str | None = None) -> dict[str, int]:
    """How many calls are in each status."""
    query = select(AsyncCall.status, func.count()).group_by(AsyncCall.status)
    if connector:
        query = query.where(AsyncCall.connector == connector)
    return {status: count for status, count in (await session.execute(query)).all()}


# ------------------------------------------------------------------------------ backoffice actions


def _text(content: bytes | None, content_type: str | None) -> str:
    """Bytes as readable text; JSON pretty-printed (seed goodie: reformatted for readability)."""
    if not content:
        return ""
    if content_type is None or "json" in content_type:
        try:
            return orjson.dumps(
                orjson.loads(content), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
            ).decode()
        except orjson.JSONDecodeError:
            pass
    return content.decode("utf-8", "replace")


pretty = _text


def unified_diff(before: str, after: str, name: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        f"{name} (before)",
        f"{name} (after)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


async def retry_call(
    session: AsyncSession, call: AsyncCall, *, phase: CallStatus | None, author: str, schedule: Schedule
) -> AsyncCall:
    """Put a call back to CALL_RETRY or RESPONSE_RETRY, due now, with its ttl and delay reset."""
    target = phase or (
        CallStatus.RESPONSE_RETRY
        if call.status in (CallStatus.RESPONSE_ERROR, CallStatus.RESPONSE_RETRY)
        else CallStatus.CALL_RETRY
    )
    if target not in (CallStatus.CALL_RETRY, CallStatus.RESPONSE_RETRY):
        raise CallStateConflict("A call can only be put back to CALL_RETRY or RESPONSE_RETRY")
    if target == CallStatus.RESPONSE_RETRY and (call.response_status is None or not call.reply_url):
        raise CallStateConflict("The call has no stored response or no $reply URL to deliver it to")
    now = utcnow()
    before = call.status
    call.status = target
    call.ttl, call.delay, call.next_try = schedule.ttl, schedule.delay, now
    call.locked_by = call.locked_until = None
    call.finished_at = None
    call.updated_at = now
    session.add(
        log_line(
            call.id,
            "action",
            "retried",
            author=author,
            ttl=call.ttl,
            next_try=now,
            detail=f"{before} -> {target}",
        )
    )
    await session.flush()
    return call


async def replay_reply(
    session: AsyncSession, call: AsyncCall, *, author: str, schedule: Schedule
) -> AsyncCall:
    """Deliver a DONE call's reply again (same webhook-id, so receivers can tell it is a replay)."""
    if call.status != CallStatus.DONE or not call.reply_url or call.response_status is None:
        raise CallStateConflict("Only a DONE call with a $reply URL can have its reply replayed")
    await retry_call(session, call, phase=CallStatus.RESPONSE_RETRY, author=author, schedule=schedule)
    session.add(log_line(call.id, "action", "replayed", author=author))
    await session.flush()
    return call


async def cancel_call(session: AsyncSession, call: AsyncCall, *, author: str) -> AsyncCall:
    """Stop a pending call for good."""
    if call.status in FINISHED_STATUSES:
        raise CallStateConflict(f"The call is already finished ({call.status})")
    now = utcnow()
    before = call.status
    call.status = CallStatus.CANCELLED
    call.locked_by = call.locked_until = None
    call.finished_at = call.updated_at = now
    session.add(log_line(call.id, "action", "cancelled", author=author, detail=f"{before} -> CANCELLED"))
    await session.flush()
    return call


async def edit_call(
    session: AsyncSession,
    call: AsyncCall,
    *,
    author: str,
    body: bytes | None = None,
    response_body: bytes | None = None,
) -> AsyncCall:
    """Replace the call's body and/or its stored response; each change logs a unified diff."""
    if call.locked_until is not None and call.locked_until > utcnow():
        raise CallStateConflict("A worker is running this call right now; try again in a moment")
    now = utcnow()
    if body is not None:
        diff = unified_diff(_text(call.body, call.content_type), _text(body, call.content_type), "body")
        call.body = body
        session.add(log_line(call.id, "edit", "edited", author=author, detail=diff or "(no change)"))
    if response_body is not None:
        if call.response_status is None:
            raise CallStateConflict("The call has no stored response yet")
        before = _text(call.response_body, call.response_content_type)
        diff = unified_diff(before, _text(response_body, call.response_content_type), "response")
        call.response_body = response_body
        session.add(log_line(call.id, "edit", "edited", author=author, detail=diff or "(no change)"))
    call.updated_at = now
    await session.flush()
    return call


async def purge_finished(session: AsyncSession, before: datetime, batch: int) -> int:
    """Delete up to `batch` calls finished before `before` (their log goes with them)."""
    ids = (
        await session.scalars(
            select(AsyncCall.id)
            .where(AsyncCall.finished_at < before, AsyncCall.status.in_(list(FINISHED_STATUSES)))
            .limit(batch)
        )
    ).all()
    if not ids:
        return 0
    await session.execute(delete(AsyncCallLog).where(AsyncCallLog.call_id.in_(ids)))
    await session.execute(delete(AsyncCall).where(AsyncCall.id.in_(ids)))
    return len(ids)
