"""HTTP only: the Orders API (scope `orders`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from pydantic import ValidationError

from app.clients.service import Principal
from app.db import SessionDep
from app.errors import BadRequest, Conflict, ServiceUnavailable
from app.orders import service, sync
from app.orders.models import OrderStatus
from app.orders.schemas import OrderIn, OrderOut, OrderPage, Replica, ResolveIn, SyncAnswer
from app.orders.sync import OrderSync
from app.security import require_scopes
from app.state import AppState

router = APIRouter(prefix="/v1/orders", tags=["orders"])
OrdersDep = Annotated[Principal, Depends(require_scopes("orders"))]
IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=200)]


def _instance(request: Request) -> str:
    state: AppState = request.app.state.sluice
    return state.settings.instance_name


@router.post("", response_model=OrderOut, status_code=201, summary="Create an order (idempotent on its id)")
async def create_order(
    data: OrderIn, request: Request, response: Response, session: SessionDep, principal: OrdersDep
) -> OrderOut:
    """201 with the new order; the same POST again (same `id`, same content) answers 200 with the
    order as it is; the same `id` with other content is 409."""
    order, created = await service.create(session, data, instance=_instance(request))
    response.status_code = 201 if created else 200
    response.headers["ETag"] = service.etag(order)
    response.headers["Location"] = f"/v1/orders/{order.id}"
    return OrderOut.of(order)


@router.get("", response_model=OrderPage, summary="List orders, or read the change feed (since=)")
async def list_orders(
    session: SessionDep,
    principal: OrdersDep,
    status: Annotated[list[OrderStatus] | None, Query(description="repeat to give several")] = None,
    currency: Annotated[str | None, Query(min_length=3, max_length=3)] = None,
    email: Annotated[str | None, Query(max_length=320, description="customer e-mail, exact")] = None,
    q: Annotated[str | None, Query(max_length=200, description="in the number or customer name")] = None,
    include_deleted: bool = False,
    limit: Annotated[int | None, Query(ge=1, le=service.MAX_PAGE)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    since: Annotated[
        int | None,
        Query(
            ge=0,
            le=service.MAX_POSITION,
            description="change feed: changes after this position (0: from the start), tombstones included",
        ),
    ] = None,
) -> OrderPage:
    if since is not None:
        rows, next_since, head = await service.changes(session, since=since, limit=service.page_limit(limit))
        return OrderPage(items=[OrderOut.of(o) for o in rows], next_since=next_since, head=head)
    rows, next_cursor = await service.list_orders(
        session,
        status=[s.value for s in status] if status else None,
        currency=currency,
        email=email,
        q=q,
        include_deleted=include_deleted,
        limit=service.page_limit(limit),
        cursor=cursor,
    )
    return OrderPage(items=[OrderOut.of(o) for o in rows], next_cursor=next_cursor)


@router.get("/{order_id}", response_model=OrderOut, summary="Read an order")
async def get_order(
    order_id: uuid.UUID,
    response: Response,
    session: SessionDep,
    principal: OrdersDep,
    include_deleted: bool = False,
) -> OrderOut:
    order = await service.get(session, order_id, include_deleted=include_deleted)
    response.headers["ETag"] = service.etag(order)
    return OrderOut.of(order)


@router.put("/{order_id}", response_model=OrderOut, summary="Change an order (If-Match required)")
async def update_order(
    order_id: uuid.UUID,
    data: OrderIn,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: OrdersDep,
    if_match: IfMatch = None,
) -> OrderOut:
    """Send `If-Match` with the ETag you read: 412 if the order changed since, 428 without it."""
    order = await service.update(session, order_id, data, if_match=if_match, instance=_instance(request))
    response.headers["ETag"] = service.etag(order)
    return OrderOut.of(order)


@router.delete("/{order_id}", response_model=OrderOut, summary="Delete an order (kept as a tombstone)")
async def delete_order(
    order_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: OrdersDep,
    if_match: IfMatch = None,
) -> OrderOut:
    order = await service.delete(session, order_id, if_match=if_match, instance=_instance(request))
    response.headers["ETag"] = service.etag(order)
    return OrderOut.of(order)


# --- sync -----------------------------------------------------------------------------------

sync_router = APIRouter(prefix="/v1/sync", tags=["order sync"])


def _sync(request: Request) -> OrderSync:
    state: AppState = request.app.state.sluice
    return state.order_sync


BATCH_MAX = 1000


async def _receive_batch(session: SessionDep, items: list[dict[str, Any]], *, new: bool) -> list[SyncAnswer]:
    """Validate each replica on its own: one the peer cannot take is refused in its place in the
    answer (`error`) without holding the others back."""
    answers: list[SyncAnswer | None] = []
    valid: list[Replica] = []
    for index, item in enumerate(items):
        try:
            replica = Replica.model_validate(item)
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            answers.append(SyncAnswer(state="ST_ERROR", ack_version=None, order=None, error=errors[:1000]))
            continue
        if (replica.sync_state == "ST_NEW") != new:
            what = "POST carries new orders (ST_NEW)" if new else "PUT carries changed or deleted orders"
            answers.append(
                SyncAnswer(state="ST_ERROR", ack_version=None, order=None, error=f"item {index}: {what}")
            )
            continue
        answers.append(None)
        valid.append(replica)
    received = iter(await sync.receive_batch(session, valid) if valid else [])
    return [answer if answer is not None else next(received) for answer in answers]


BatchBody = Annotated[
    list[dict[str, Any]],
    Body(max_length=BATCH_MAX, description="Replicas as the single endpoints take them, at most 1000"),
]


@sync_router.post(
    "/orders/batch", response_model=list[SyncAnswer], summary="Receive new orders from the peer, in one go"
)
async def receive_new_batch(items: BatchBody, session: SessionDep, principal: OrdersDep) -> list[SyncAnswer]:
    """The peer's sync loop pushes its new orders here: applied in one transaction, one answer
    per replica in the same order (a replica not valid here gets `error` and is not applied)."""
    return await _receive_batch(session, items, new=True)


@sync_router.put(
    "/orders/batch",
    response_model=list[SyncAnswer],
    summary="Receive changed and deleted orders from the peer, in one go",
)
async def receive_change_batch(
    items: BatchBody, session: SessionDep, principal: OrdersDep
) -> list[SyncAnswer]:
    return await _receive_batch(session, items, new=False)


@sync_router.post("/orders", response_model=SyncAnswer, summary="Receive a new order from the peer")
async def receive_new(replica: Replica, session: SessionDep, principal: OrdersDep) -> SyncAnswer:
    """Used by the peer's sync loop: the answer is the state the record took here."""
    return await sync.receive(session, replica)


@sync_router.put(
    "/orders/{order_id}", response_model=SyncAnswer, summary="Receive a changed order from the peer"
)
async def receive_change(
    order_id: uuid.UUID, replica: Replica, session: SessionDep, principal: OrdersDep, if_match: IfMatch = None
) -> SyncAnswer:
    if replica.id != order_id:
        raise BadRequest(f"The body's id {replica.id} is not the URL's {order_id}")
    return await sync.receive(session, replica)


@sync_router.get("/status", summary="The sync loop's cursor, last run, errors and counts per state")
async def sync_status(request: Request, principal: OrdersDep) -> dict[str, Any]:
    return await _sync(request).status()


@sync_router.post("/run", summary="Run a sync round now")
async def sync_now(request: Request, principal: OrdersDep) -> dict[str, Any]:
    syncer = _sync(request)
    if not syncer.enabled:
        raise Conflict("No peer configured (SYNC_PEER_URL)")
    try:
        result = await syncer.run_once(wait=True)
    except sync.PeerError as exc:
        raise ServiceUnavailable(f"The peer failed: {exc}") from exc
    except sync.RoundBusy as exc:
        raise Conflict(f"Try again later: {exc}") from exc
    return {
        "pulled": result.pulled,
        "pushed": result.pushed,
        "failed": result.failed,
        **await syncer.status(),
    }


@router.post("/{order_id}/resolve", response_model=OrderOut, summary="Resolve a collision or sync error")
async def resolve_order(
    order_id: uuid.UUID,
    data: ResolveIn,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: OrdersDep,
) -> OrderOut:
    """`{"take": "local"}`, `{"take": "remote"}` or `{"take": "merged", "order": {...}}`: a new
    version that the peer takes over its own copy."""
    order = await sync.resolve(session, order_id, data, instance=_instance(request))
    response.headers["ETag"] = service.etag(order)
    return OrderOut.of(order)
