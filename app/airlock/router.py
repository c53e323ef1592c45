"""HTTP only: async calls for their callers, the backoffice (admin scope), connectors, secrets."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from app.airlock import service
from app.airlock.machine import Schedule
from app.airlock.models import AirlockConnector, AsyncCall, CallStatus, WebhookSecret
from app.airlock.schemas import (
    AsyncCallDetail,
    AsyncCallOut,
    AsyncCallPage,
    BulkRetryIn,
    ConnectorIn,
    ConnectorOut,
    EditIn,
    LogLineOut,
    NewSecretOut,
    RetryIn,
    SecretOut,
)
from app.clients.service import Principal
from app.db import SessionDep
from app.errors import BadRequest, ValidationFailed
from app.security import require_scopes
from app.state import AppState

router = APIRouter(tags=["async calls"])
CallerDep = Annotated[Principal, Depends(require_scopes())]
AdminDep = Annotated[Principal, Depends(require_scopes("admin"))]


def _state(request: Request) -> AppState:
    return request.app.state.sluice  # type: ignore[no-any-return]


async def _wake(request: Request, session: SessionDep) -> None:
    await service.wake_workers(session)
    _state(request).airlock_wake.set()


@router.get("/v1/async-calls/{call_id}", response_model=AsyncCallOut, response_model_by_alias=True)
async def get_async_call(call_id: uuid.UUID, session: SessionDep, principal: CallerDep) -> AsyncCallOut:
    """Status, attempts, next try and, once answered, the response. Callers see their own calls."""
    return AsyncCallOut.of(await service.get_call(session, call_id, principal))


@router.get("/v1/async-calls", response_model=AsyncCallPage, response_model_by_alias=True)
async def list_async_calls(
    session: SessionDep,
    principal: CallerDep,
    connector: Annotated[str | None, Query(max_length=100)] = None,
    status: Annotated[list[CallStatus] | None, Query(description="repeat to give several")] = None,
    client: Annotated[str | None, Query(max_length=64, description="API client id (admin only)")] = None,
    since: Annotated[datetime | None, Query(description="created at or after, ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="created before, ISO 8601")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AsyncCallPage:
    """Calls, newest first; an admin sees every client's (filter with `client`)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"{name} needs a timezone offset (e.g. Z)")
    if not principal.has("admin"):
        client = principal.id
    try:
        after = service.decode_cursor(cursor) if cursor else None
    except ValueError:
        raise BadRequest("cursor is not valid") from None
    filters = service.CallFilter(connector, [s.value for s in status or []], client, since, until)
    rows, next_cursor = await service.list_calls(session, filters, after=after, limit=limit)
    return AsyncCallPage(
        data=[AsyncCallOut.of(r) for r in rows], meta={"next_cursor": next_cursor, "count": len(rows)}
    )


# ---------------------------------------------------------------------------------- backoffice


async def _detail(session: SessionDep, call: AsyncCall) -> AsyncCallDetail:
    log = await service.call_log(session, call.id)
    base = AsyncCallOut.of(call).model_dump()
    return AsyncCallDetail(
        **base,
        api_client_id=call.api_client_id,
        api_client_name=call.api_client_name,
        org_id=call.org_id,
        request_id=call.request_id,
        query_string=call.query_string,
        request_headers=call.request_headers,
        content_type=call.content_type,
        request_body=service.pretty(call.body, call.content_type),
        response_body=service.pretty(call.response_body, call.response_content_type),
        locked_by=call.locked_by,
        locked_until=call.locked_until,
        log=[LogLineOut.of(line) for line in log],
    )


@router.get(
    "/v1/async-calls/{call_id}/detail",
    response_model=AsyncCallDetail,
    response_model_by_alias=True,
    tags=["airlock backoffice"],
)
async def get_async_call_detail(call_id: uuid.UUID, session: SessionDep, _: AdminDep) -> AsyncCallDetail:
    """The stored request and response (JSON pretty-printed) and the full log."""
    return await _detail(session, await service.get_call(session, call_id))


@router.get("/v1/async-calls/{call_id}/log", response_model=list[LogLineOut], tags=["async calls"])
async def get_async_call_log(
    call_id: uuid.UUID, session: SessionDep, principal: CallerDep
) -> list[LogLineOut]:
    """Every attempt, edit and action on the call, oldest first."""
    await service.get_call(session, call_id, principal)
    return [LogLineOut.of(line) for line in await service.call_log(session, call_id)]


async def _schedule(request: Request, session: SessionDep, call: AsyncCall) -> Schedule:
    settings = _state(request).settings
    return (await service.get_connector(session, call.connector, settings)).schedule(settings)


@router.post(
    "/v1/async-calls/{call_id}/retry",
    response_model=AsyncCallDetail,
    response_model_by_alias=True,
    tags=["airlock backoffice"],
)
async def retry_async_call(
    call_id: uuid.UUID, request: Request, session: SessionDep, admin: AdminDep, body: RetryIn | None = None
) -> AsyncCallDetail:
    """Put the call back to CALL_RETRY or RESPONSE_RETRY, due now, ttl reset."""
    call = await service.get_call(session, call_id)
    phase = CallStatus(body.phase) if body and body.phase else None
    await service.retry_call(
        session, call, phase=phase, author=admin.name, schedule=await _schedule(request, session, call)
    )
    await _wake(request, session)
    return await _detail(session, call)


@router.post("/v1/async-calls/retry", tags=["airlock backoffice"])
async def retry_async_calls(
    body: BulkRetryIn, request: Request, session: SessionDep, admin: AdminDep
) -> dict[str, object]:
    """Put many calls back to retry: by ids, or every call of a status (and connector)."""
    if body.ids:
        calls = [await service.get_call(session, i) for i in body.ids]
    else:
        filters = service.CallFilter(connector=body.connector, status=[body.status] if body.status else None)
        calls = list((await service.list_calls(session, filters, after=None, limit=1000))[0])
    phase = CallStatus(body.phase) if body.phase else None
    retried, refused = [], []
    for call in calls:
        try:
            await service.retry_call(
                session,
                call,
                phase=phase,
                author=admin.name,
                schedule=await _schedule(request, session, call),
            )
            retried.append(str(call.id))
        except service.CallStateConflict as exc:
            refused.append({"$reply_id": str(call.id), "reason": exc.detail})
    if retried:
        await _wake(request, session)
    return {"retried": retried, "refused": refused}


@router.patch(
    "/v1/async-calls/{call_id}",
    response_model=AsyncCallDetail,
    response_model_by_alias=True,
    tags=["airlock backoffice"],
)
async def edit_async_call(
    call_id: uuid.UUID, body: EditIn, session: SessionDep, admin: AdminDep
) -> AsyncCallDetail:
    """Replace the call's body or its stored response; each edit logs a unified diff and its author."""
    call = await service.get_call(session, call_id)
    try:
        new_body, new_response = body.new_body(), body.new_response()
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None
    await service.edit_call(session, call, author=admin.name, body=new_body, response_body=new_response)
    return await _detail(session, call)


@router.post(
    "/v1/async-calls/{call_id}/cancel",
    response_model=AsyncCallDetail,
    response_model_by_alias=True,
    tags=["airlock backoffice"],
)
async def cancel_async_call(call_id: uuid.UUID, session: SessionDep, admin: AdminDep) -> AsyncCallDetail:
    """Stop a pending call for good (status CANCELLED)."""
    call = await service.get_call(session, call_id)
    await service.cancel_call(session, call, author=admin.name)
    return await _detail(session, call)


@router.post(
    "/v1/async-calls/{call_id}/replay",
    response_model=AsyncCallDetail,
    response_model_by_alias=True,
    tags=["airlock backoffice"],
)
async def replay_async_call(
    call_id: uuid.UUID, request: Request, session: SessionDep, admin: AdminDep
) -> AsyncCallDetail:
    """Deliver a DONE call's reply again (same webhook-id)."""
    call = await service.get_call(session, call_id)
    await service.replay_reply(
        session, call, author=admin.name, schedule=await _schedule(request, session, call)
    )
    await _wake(request, session)
    return await _detail(session, call)


# ---------------------------------------------------------------------------------- connectors


def _connector_out(config: service.ConnectorConfig, row: object | None = None) -> ConnectorOut:
    return ConnectorOut(
        name=config.name,
        ttl=config.ttl,
        delay=config.delay,
        error_urls=config.error_urls,
        error_emails=config.error_emails,
        retries_for_seconds=config.delay * (2**config.ttl - 1),
        updated_at=getattr(row, "updated_at", None),
        updated_by=getattr(row, "updated_by", None),
    )


@router.get("/v1/airlock/connectors", response_model=list[ConnectorOut], tags=["airlock backoffice"])
async def list_airlock_connectors(request: Request, session: SessionDep, _: AdminDep) -> list[ConnectorOut]:
    """Every connector: the partner's, and any with stored settings."""
    state = _state(request)
    rows = {r.name: r for r in await service.list_connectors(session)}
    names = sorted({state.partner.name, *rows})
    return [
        _connector_out(await service.get_connector(session, n, state.settings), rows.get(n)) for n in names
    ]


@router.get("/v1/airlock/connectors/{name}", response_model=ConnectorOut, tags=["airlock backoffice"])
async def get_airlock_connector(
    name: str, request: Request, session: SessionDep, _: AdminDep
) -> ConnectorOut:
    """A connector's ttl, delay, error URLs and error e-mails (defaults until changed)."""
    config = await service.get_connector(session, name, _state(request).settings)
    return _connector_out(config, await session.get(AirlockConnector, name))


@router.put("/v1/airlock/connectors/{name}", response_model=ConnectorOut, tags=["airlock backoffice"])
async def update_airlock_connector(
    name: Annotated[str, Path(min_length=1, max_length=100)],
    body: ConnectorIn,
    request: Request,
    session: SessionDep,
    admin: AdminDep,
) -> ConnectorOut:
    """Change a connector's settings at runtime (new calls and retries use them within seconds)."""
    state = _state(request)
    urls = (
        [state.url_policy.check(u, what="error") for u in body.error_urls or []]
        if body.error_urls is not None
        else None
    )
    row = await service.update_connector(
        session,
        name,
        state.settings,
        admin.name,
        ttl=body.ttl,
        delay=body.delay,
        error_urls=urls,
        error_emails=[str(e) for e in body.error_emails] if body.error_emails is not None else None,
    )
    return _connector_out(await service.get_connector(session, name, state.settings), row)


@router.post("/v1/airlock/connectors/{name}/rotate-secret", tags=["airlock backoffice"])
async def rotate_airlock_connector_secret(
    name: str, request: Request, session: SessionDep, admin: AdminDep
) -> dict[str, str]:
    """A new secret signing the connector's error reports (shown once)."""
    secret = await service.rotate_connector_secret(session, name, _state(request).settings, admin.name)
    return {"name": name, "secret": secret}


# ---------------------------------------------------------------------------------- secrets


def _secret_out(row: WebhookSecret, *, reveal: bool = False) -> SecretOut:
    fields: dict[str, Any] = {
        "id": row.id,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "hint": row.secret[:10] + "…",
    }
    return NewSecretOut(**fields, secret=row.secret) if reveal else SecretOut(**fields)


@router.get("/v1/webhook-secrets", response_model=list[SecretOut], tags=["async calls"])
async def list_webhook_secrets(session: SessionDep, principal: CallerDep) -> list[SecretOut]:
    """Your secrets that still sign replies (values are not shown again)."""
    return [_secret_out(r) for r in await service.list_secrets(session, principal.id)]


@router.post("/v1/webhook-secrets", response_model=NewSecretOut, status_code=201, tags=["async calls"])
async def rotate_webhook_secret(request: Request, session: SessionDep, principal: CallerDep) -> SecretOut:
    """A new signing secret for your replies, shown once. The previous ones keep signing (a second
    signature) for WEBHOOK_SECRET_OVERLAP_HOURS, so receivers can switch without losing replies."""
    overlap = timedelta(hours=_state(request).settings.webhook_secret_overlap_hours)
    return _secret_out(await service.rotate_secret(session, principal.id, overlap), reveal=True)
