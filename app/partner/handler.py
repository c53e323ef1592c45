"""The seed's "Handler" decorator as a FastAPI route class.

Every gateway route is wrapped: the caller is authenticated first, the upstream exchange is
recorded, the communication-log entry is built from the request and the final response
(success or error), and server-side failures are notified. Neither adds I/O to the request:
the log is buffered and notifications are queued.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

from app.commlog.service import body_text, redact_headers
from app.errors import render_exception
from app.notify import ErrorEvent
from app.observability import current_trace_id
from app.security import authenticate_request
from app.state import AppState
from app.upstream.client import UpstreamExchange, exchange_var


def _error_fields(response: Response) -> tuple[str | None, dict[str, Any]]:
    if response.media_type != "application/problem+json":
        return None, {}
    try:
        body = orjson.loads(bytes(response.body))
    except (orjson.JSONDecodeError, TypeError):
        return None, {}
    return body.get("code"), body


class GatewayRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        route_path = self.path

        async def gateway_handler(request: Request) -> Response:
            state: AppState = request.app.state.sluice
            started = time.perf_counter()
            exchange = UpstreamExchange()
            token = exchange_var.set(exchange)
            try:
                # Authenticate before FastAPI parses the body, so that a caller without a key
                # learns nothing from body validation.
                await authenticate_request(request)
                response = await original(request)
            except Exception as exc:
                rendered = render_exception(request, exc)
                if rendered is None:
                    # The request middleware answers 500; log and notify it here all the same.
                    _record(state, request, 500, None, "internal_error", exchange, started)
                    problem = {"title": "Internal server error", "detail": type(exc).__name__}
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
            if response.status_code >= 500:
                _notify(state, request, route_path, response.status_code, code, problem)
            return response

        return gateway_handler


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
