"""The seed's "Handler" decorator as a FastAPI route class.

Every gateway route is wrapped: the caller is authenticated first, the upstream exchange is
recorded, the communication-log entry is built from the request and the final response
(success or error), and server-side failures are notified. Neither adds I/O to the request:
the log is buffered and notifications are queued.

The airlock hooks in here too (seed 001's decorator): `$reply` is taken out of the request, a
`Prefer: respond-async` request is stored once validated instead of calling the partner, and a
call with `$reply` that fails in a way that may succeed later is stored and answered 202. The
delivery loop replays stored calls through the same handler (`ROUTES`), marked in the scope.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.airlock import capture as airlock_capture
from app.commlog.service import body_text, redact_headers
from app.errors import problem_response, render_exception
from app.notify import ErrorEvent
from app.observability import current_trace_id
from app.security import authenticate_request
from app.state import AppState
from app.upstream.client import UpstreamExchange, exchange_var
from app.upstream.errors import DeferredCall, Throttled, ThrottleQueued, UpstreamError

# Scope keys of a replay by the airlock's delivery loop: the call's id, and where the handler
# leaves the exception behind a rendered error (the loop decides from it whether to retry).
REPLAY_KEY = "sluice.airlock_call"
ERROR_KEY = "sluice.error"
# A replay's reserved throttling slot (Unix time), when the call was queued by throttling.
THROTTLE_SLOT_KEY = "sluice.throttle_slot"

# Every gateway route by name (the seed's "view name"), for the delivery loop's replays.
ROUTES: dict[str, GatewayRoute] = {}

logger = logging.getLogger("sluice.partner")


def _error_fields(response: Response) -> tuple[str | None, dict[str, Any]]:
    if response.media_type != "application/problem+json":
        return None, {}
    try:
        body = orjson.loads(bytes(response.body))
    except (orjson.JSONDecodeError, TypeError):
        return None, {}
    return body.get("code"), body


def _retry_may_help(exc: Exception) -> bool:
    # A call refused by throttling even for the queue (no slot within 6 hours) is answered
    # 429; one given a slot in the queue (ThrottleQueued) is stored for it.
    if isinstance(exc, Throttled) and not isinstance(exc, ThrottleQueued):
        return False
    return isinstance(exc, UpstreamError) and exc.retryable


class GatewayRoute(APIRoute):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ROUTES[self.name] = self
        self._handler: Callable[[Request], Coroutine[Any, Any, Response]] | None = None

    @property
    def handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The wrapped handler, built once (the delivery loop calls it for each replay)."""
        if self._handler is None:
            self._handler = self.get_route_handler()
        return self._handler

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        route_path = self.path
        view_name = self.name

        async def gateway_handler(request: Request) -> Response:
            state: AppState = request.app.state.sluice
            started = time.perf_counter()
            exchange = UpstreamExchange()
            token = exchange_var.set(exchange)
            replay = REPLAY_KEY in request.scope
            capture = None
            try:
                # Authenticate before FastAPI parses the body, so that a caller without a key
                # learns nothing from body validation.
                principal = await authenticate_request(request)
                exchange.org_id = principal.org_id
                if not replay:
                    capture = await airlock_capture.inspect(
                        request, state.url_policy, state.settings.airlock_max_body
                    )
                    exchange.defer = capture.respond_async
                    exchange.may_defer = capture.reply_url is not None
                else:
                    exchange.may_defer = True
                    exchange.prepaid_slot = request.scope.get(THROTTLE_SLOT_KEY)
                response = await original(request)
            except DeferredCall:
                assert capture is not None
                try:
                    response = await airlock_capture.accept(
                        state, request, capture, view_name=view_name, failure=None
                    )
                except Exception as store_exc:
                    logger.error("could not store the call to run later: %r", store_exc)
                    response = render_exception(request, store_exc) or _internal_error()
            except Exception as exc:
                if capture is not None and capture.reply_url and _retry_may_help(exc):
                    try:
                        response = await airlock_capture.accept(
                            state, request, capture, view_name=view_name, failure=exc
                        )
                    except Exception as store_exc:
                        # Not stored: the caller gets the partner's error, as without $reply.
                        logger.error("could not store the failed call for later: %r", store_exc)
                        response = render_exception(request, exc) or _internal_error()
                else:
                    rendered = render_exception(request, exc)
                    if replay:
                        request.scope[ERROR_KEY] = exc
                    if rendered is None:
                        # The request middleware answers 500; log and notify it here all the same.
                        _record(state, request, 500, None, "internal_error", exchange, started)
                        problem = {"title": "Internal server error", "detail": type(exc).__name__}
                        if not replay:
                            _notify(state, request, route_path, 500, "internal_error", problem)
                        raise
                    response = rendered
            finally:
                exchange_var.reset(token)
            code, problem = _error_fields(response)
            _record(
                state,
                request,
                response.status_code,
                bytes(response.body),
                code,
                exchange,
                started,
            )
            if response.status_code >= 500 and not replay:
                # (A replay's failures are the airlock's to report, once the call gives up.)
                _notify(state, request, route_path, response.status_code, code, problem)
            return response

        return gateway_handler


def _internal_error() -> Response:
    return problem_response(status=500, code="internal_error", title="Internal server error")


def _record(
    state: AppState,
    request: Request,
    status: int,
    response_body: bytes | None,
    error_code: str | None,
    exchange: UpstreamExchange,
    started: float,
) -> None:
    settings = state.settings
    if not settings.commlog_enabled:
        return
    principal = getattr(request.state, "principal", None)
    limit = settings.commlog_body_limit
    request_body = getattr(request, "_body", None)
    state.commlog.enqueue(
        {
            "created_at": datetime.now(UTC),
            "request_id": getattr(request.state, "request_id", None),
            "trace_id": current_trace_id(),
            "api_client_id": principal.id if principal else None,
            "client_id": request.headers.get("x-client-id"),
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query or None,
            "request_headers": redact_headers(request.headers),
            "request_body": body_text(request_body, limit),
            "status": status,
            "error_code": error_code,
            # Response bodies are the partner's data and Sluice's problem details: cut, not parsed.
            "response_body": body_text(response_body, limit, redact=False),
            "upstream_url": exchange.url,
            "upstream_status": exchange.status,
            "upstream_duration_ms": exchange.duration_ms,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
    )


def _notify(
    state: AppState, request: Request, route_path: str, status: int, code: str | None, problem: dict[str, Any]
) -> None:
    state.notifier.notify(
        ErrorEvent(
            code=code or "internal_error",
            status=status,
            title=str(problem.get("title") or "Server-side failure"),
            detail=problem.get("detail"),
            method=request.method,
            path=route_path,
            client_id=request.headers.get("x-client-id"),
            request_id=getattr(request.state, "request_id", None),
            trace_id=current_trace_id(),
            partner_code=problem.get("partner_code"),
            partner_message=problem.get("partner_message"),
            upstream=problem.get("upstream"),
        )
    )
