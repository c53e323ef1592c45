"""Run a stored call again through its gateway route, in process (seed: the view and its args).

The request is rebuilt from the stored record and handed to the route's wrapped handler, so a
replay validates, calls the partner, maps errors and writes the communication log exactly as
the original request did — without HTTP, middleware or authentication (the caller was
authenticated when the call was accepted).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Message

from app.airlock.models import AsyncCall
from app.clients.service import Principal
from app.observability import request_id_var
from app.partner.handler import ERROR_KEY, REPLAY_KEY, ROUTES, THROTTLE_SLOT_KEY
from app.upstream.errors import ThrottleQueued, UpstreamError


@dataclass(frozen=True, slots=True)
class ReplayResult:
    status: int
    content_type: str | None
    body: bytes
    # True when the answer is the call's result; False when trying later may give another.
    final: bool
    error: str | None
    latency_ms: float
    # Set when throttling gave the call a later slot instead of calling the partner now.
    throttled: ThrottleQueued | None = None


def _is_final(status: int, error: BaseException | None) -> bool:
    if isinstance(error, UpstreamError):
        return not error.retryable
    # A 5xx without a typed error is Sluice's own failure (database, bug): worth another try.
    return status < 500


async def replay(app: FastAPI, call: AsyncCall) -> ReplayResult:
    """The call's response now, and whether it is final."""
    started = time.perf_counter()
    route = ROUTES.get(call.view_name)
    if route is None:
        # The operation is gone (renamed in a new version?): retrying will not bring it back soon,
        # but an operator can still fix and retry, so this counts as a retryable failure.
        return ReplayResult(500, None, b"", False, f"unknown operation {call.view_name}", 0.0)
    request_id = f"airlock-{call.id.hex[:16]}-{call.attempts + 1}"
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in call.request_headers.items()]
    principal = Principal(
        id=call.api_client_id, name=call.api_client_name, org_id=call.org_id, scopes=frozenset({"partner"})
    )
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "path": call.path,
        "raw_path": call.path.encode(),
        "root_path": "",
        "query_string": call.query_string.encode("latin-1"),
        "headers": headers,
        "client": None,
        "server": None,
        "app": app,
        "route": route,
        "endpoint": route.endpoint,
        "path_params": dict(call.path_params or {}),
        "state": {"request_id": request_id, "principal": principal},
        REPLAY_KEY: str(call.id),
    }
    if call.throttle_slot is not None:
        scope[THROTTLE_SLOT_KEY] = call.throttle_slot.timestamp()
    body = call.body or b""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    token = request_id_var.set(request_id)
    try:
        # FastAPI's own exit stacks (normally set up by its middleware and request_response).
        async with AsyncExitStack() as middleware_stack, AsyncExitStack() as request_stack:
            scope["fastapi_middleware_astack"] = middleware_stack
            scope["fastapi_inner_astack"] = request_stack
            async with AsyncExitStack() as function_stack:
                scope["fastapi_function_astack"] = function_stack
                response = await route.handler(Request(scope, receive))
    except Exception as exc:  # an unexpected failure of the operation itself
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        return ReplayResult(500, None, b"", False, f"{type(exc).__name__}: {exc}"[:1000], elapsed)
    finally:
        request_id_var.reset(token)
    error: BaseException | None = scope.get(ERROR_KEY)
    status = response.status_code
    content_type = response.headers.get("content-type")
    message = None
    if error is not None:
        message = f"{getattr(error, 'code', type(error).__name__)}: {error}"[:1000]
    elapsed = round((time.perf_counter() - started) * 1000, 2)
    return ReplayResult(
        status,
        content_type,
        bytes(response.body),
        _is_final(status, error),
        message,
        elapsed,
        error if isinstance(error, ThrottleQueued) else None,
    )
