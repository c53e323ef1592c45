"""The sandbox partner: a Tokopedia-style digital-goods API that Sluice proxies.

Mounted in-process at /sandbox by `make run`, served as its own process by the tests. Partner
answers use the Tokopedia Open API envelope; the token endpoint answers plain OAuth2 JSON.
Handlers take the raw Request and build responses with orjson: this app sits under load tests,
so it avoids pydantic models and per-request validation machinery on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.sandbox.state import ADMIN_FEE, DEFAULT_AMOUNT, SandboxState, find_product, list_products, make_order
from app.sandbox.triggers import PREFIX, find_triggers

_RECORDED_HEADERS = ("x-language-id", "traceparent", "x-client-id", "authorization")
Handler = Callable[[Request, SandboxState, Any, float], Awaitable[Response]]

router = APIRouter()


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, headers=headers, media_type="application/json")


def _envelope(
    started: float,
    data: Any,
    *,
    status: int = 200,
    messages: str = "success",
    reason: str = "",
    error_code: str = "",
    headers: dict[str, str] | None = None,
) -> Response:
    header = {
        "process_time": round(time.perf_counter() - started, 6),
        "messages": messages,
        "reason": reason,
        "error_code": error_code,
    }
    return _json({"header": header, "data": data}, status, headers)


def _error(started: float, status: int, code: str, messages: str, reason: str) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="sandbox"'} if status == 401 else None
    return _envelope(
        started, None, status=status, messages=messages, reason=reason, error_code=code, headers=headers
    )


def _state(request: Request) -> SandboxState:
    # request.app is the sandbox app itself even when mounted under Sluice.
    state: SandboxState = request.app.state.sandbox
    return state


def _route_path(request: Request) -> str:
    """The path relative to where the sandbox is mounted (/sandbox under Sluice, / standalone)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "")
    return (path[len(root) :] or "/") if root and path.startswith(root) else path


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def _partner(request: Request, route: str, handler: Handler) -> Response:
    """What every partner endpoint does before its own work: record, delay, auth, fail, trigger."""
    started = time.perf_counter()
    sandbox = _state(request)
    sandbox.count(route)
    body: Any = None
    body_invalid = False
    if request.method == "POST":
        raw = await request.body()
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body_invalid = True
    path = _route_path(request)
    query = request.query_params
    headers = request.headers
    recorded = {name: headers[name] for name in _RECORDED_HEADERS if name in headers}
    sandbox.remember(
        {"path": path, "method": request.method, "headers": recorded, "query": dict(query), "body": body}
    )
    if sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    values = chain(
        path.split("/"),
        (value for _, value in query.multi_items()),
        body.values() if isinstance(body, dict) else (),
    )
    triggers = find_triggers(values)
    token = _bearer(request)
    if (triggers is not None and triggers.unauthorized) or token is None or not sandbox.token_valid(token):
        sandbox.unauthorized += 1
        return _error(started, 401, "", "invalid or expired access token", "unauthorized")
    config = sandbox.config
    if config.fail_next > 0:
        config.fail_next -= 1
        status = config.fail_status
        messages = "sandbox upstream failure" if status >= 500 else "sandbox forced failure"
        return _error(started, status, "", messages, "sandbox fail_next")
    if triggers is not None:
        if triggers.slow_ms:
            await asyncio.sleep(triggers.slow_ms / 1000)
        if triggers.status is not None:
            return _error(
                started, triggers.status, triggers.code, triggers.message, f"sandbox trigger {triggers.name}"
            )
    if body_invalid or (request.method == "POST" and not isinstance(body, dict)):
        return _error(started, 400, "P02", "invalid request", "the body must be a JSON object")
    return await handler(request, sandbox, body, started)


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)  # ValueError is turned into a P02 answer by the caller


async def _product_list(request: Request, sandbox: SandboxState, body: Any, started: float) -> Response:
    try:
        category_id = _int_param(request, "category_id", None)
        operator_id = _int_param(request, "operator_id", None)
        page = max(1, _int_param(request, "page", 1) or 1)
        per_page = min(100, max(1, _int_param(request, "per_page", 20) or 20))
    except ValueError:
        return _error(
            started, 400, "P02", "invalid request", "category_id, operator_id, page and per_page are integers"
        )
    products = list_products(category_id, operator_id, request.query_params.get("product_code"))
    start = (page - 1) * per_page
    return _envelope(started, products[start : start + per_page])


def _ordered_product(body: dict[str, Any], started: float) -> dict[str, Any] | Response:
    """The product of a valid inquiry/order body, else the P02 (invalid) or S01 (unknown) answer."""
    for name in ("product_code", "customer_number"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            return _error(started, 400, "P02", "invalid request", f"{name} is required (a non-empty string)")
    ref_id = body.get("ref_id")
    if ref_id is not None and not isinstance(ref_id, str):
        return _error(started, 400, "P02", "invalid request", "ref_id must be a string")
    product = find_product(body["product_code"])
    if product is None:
        reason = f"product {body['product_code']} not found or closed"
        return _error(started, 400, "S01", "The product is closed or unavailable", reason)
    return product


async def _inquiry(request: Request, sandbox: SandboxState, body: Any, started: float) -> Response:
    product = _ordered_product(body, started)
    if isinstance(product, Response):
        return product
    return _envelope(
        started,
        {
            "inquiry_id": str(uuid.uuid4()),
            "product_code": body["product_code"],
            "customer_number": body["customer_number"],
            "customer_name": "Sandbox Customer",
            "amount": product.get("price", DEFAULT_AMOUNT),
            "admin_fee": ADMIN_FEE,
        },
    )


async def _create_order(request: Request, sandbox: SandboxState, body: Any, started: float) -> Response:
    product = _ordered_product(body, started)
    if isinstance(product, Response):
        return product
    order = make_order(str(uuid.uuid4()), body.get("ref_id"), product, body["customer_number"])
    sandbox.store_order(order)
    return _envelope(started, order)


async def _get_order(request: Request, sandbox: SandboxState, body: Any, started: float) -> Response:
    order_id: str = request.path_params["order_id"]
    order = sandbox.orders.get(order_id)
    if order is None and order_id.startswith(PREFIX):
        # A trigger used as an order id (e.g. TRIGGER-SLOW-500) stands for an existing order.
        order = make_order(order_id, None, find_product(order_id) or {}, "0000000000")
    if order is None:
        return _error(started, 404, "P04", "order not found", f"order {order_id} not found")
    return _envelope(started, order)


@router.get("/v2/product-list")
async def product_list(request: Request) -> Response:
    return await _partner(request, "GET /v2/product-list", _product_list)


@router.post("/v2/inquiry")
async def inquiry(request: Request) -> Response:
    return await _partner(request, "POST /v2/inquiry", _inquiry)


@router.post("/v2/order")
async def create_order(request: Request) -> Response:
    return await _partner(request, "POST /v2/order", _create_order)


@router.get("/v2/order/{order_id}")
async def get_order(request: Request) -> Response:
    return await _partner(request, "GET /v2/order/{order_id}", _get_order)


async def _client_credentials(request: Request) -> tuple[str | None, str | None, dict[str, str]]:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/"):
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    else:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None, form
        return client_id, secret, form
    return form.get("client_id"), form.get("client_secret"), form


@router.post("/oauth/token")
async def issue_token(request: Request) -> Response:
    sandbox = _state(request)
    sandbox.count("POST /oauth/token")
    if sandbox.config.token_delay_ms:
        await asyncio.sleep(sandbox.config.token_delay_ms / 1000)
    config = sandbox.config
    if config.token_fail_next > 0:
        config.token_fail_next -= 1
        return _json({"error": "temporarily_unavailable"}, config.token_fail_status)
    client_id, secret, form = await _client_credentials(request)
    valid = (
        client_id is not None
        and secret is not None
        and hmac.compare_digest(client_id.encode(), sandbox.client_id.encode())
        and hmac.compare_digest(secret.encode(), sandbox.client_secret.encode())
    )
    if not valid:
        return _json({"error": "invalid_client"}, 401, {"WWW-Authenticate": 'Basic realm="sandbox"'})
    if form.get("grant_type") != "client_credentials":
        return _json({"error": "unsupported_grant_type"}, 400)
    token, ttl = sandbox.issue_token()
    body = {"access_token": token, "token_type": "Bearer", "expires_in": ttl}
    return _json(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.get("/_sandbox/stats")
async def stats(request: Request) -> Response:
    return _json(_state(request).stats())


@router.get("/_sandbox/arrivals")
async def arrivals(request: Request) -> Response:
    """Arrival times (Unix seconds) of the partner calls, per route; `?route=` for one."""
    recorded = _state(request).arrivals
    route = request.query_params.get("route")
    if route is not None:
        return _json({route: list(recorded.get(route, ()))})
    return _json({name: list(times) for name, times in recorded.items()})


@router.post("/_sandbox/reset")
async def reset(request: Request) -> Response:
    _state(request).reset()
    return _json({"ok": True})


@router.post("/_sandbox/revoke-tokens")
async def revoke_tokens(request: Request) -> Response:
    return _json({"revoked": _state(request).revoke_tokens()})


@router.get("/_sandbox/config")
async def get_config(request: Request) -> Response:
    return _json(_state(request).config.as_dict())


@router.post("/_sandbox/config")
async def set_config(request: Request) -> Response:
    sandbox = _state(request)
    raw = await request.body()
    try:
        values = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        return _json({"error": "invalid_config", "detail": "the body must be a JSON object"}, 400)
    invalid = sandbox.config.update(values)
    if invalid is not None:
        return _json({"error": "invalid_config", "field": invalid}, 400)
    return _json(sandbox.config.as_dict())


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and wrong methods answer in the partner's envelope too, as a real one would.
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "internal error"
    return _error(time.perf_counter(), status, "", str(detail), str(detail))


def create_sandbox_app(
    client_id: str = "sandbox-client", client_secret: str = "sandbox-secret", token_ttl: int = 3600
) -> FastAPI:
    app = FastAPI(title="Sluice sandbox partner", docs_url=None, openapi_url=None, redoc_url=None)
    app.state.sandbox = SandboxState(
        client_id=client_id, client_secret=client_secret, default_token_ttl=token_ttl
    )
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app
