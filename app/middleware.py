"""Pure-ASGI request middleware: request id, access log, HTTP metrics, last-resort 500.

Written as raw ASGI rather than BaseHTTPMiddleware because it sits on every request and the
gateway's throughput budget is tight.
"""

from __future__ import annotations

import logging
import os
import re
import time

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import problem_response, render_exception, unstorable_text
from app.observability import HTTP_LATENCY, HTTP_REQUESTS, request_id_var

logger = logging.getLogger("sluice.http")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_UNLOGGED_PREFIXES = ("/health", "/metrics")
_UNTRACED_PREFIXES = ("/health", "/metrics", "/sandbox/", "/admin", "/docs", "/openapi.json")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


class _HeaderGetter:
    """Reads W3C trace-context headers straight from the ASGI header list."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.encode()
        values = [v.decode("latin-1") for k, v in carrier["headers"] if k == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier["headers"]]


_GETTER = _HeaderGetter()


class RequestContextMiddleware:
    """Request id, access log, HTTP metrics, last-resort 500 and (when given a tracer) the
    server span of the request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = True, tracer: Tracer | None = None) -> None:
        self.app = app
        self.access_log = access_log
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        span_cm = None
        span = None
        if self.tracer is not None and not scope["path"].startswith(_UNTRACED_PREFIXES):
            parent = propagate.extract(scope, getter=_GETTER)  # type: ignore[arg-type]
            span_cm = self.tracer.start_as_current_span(
                f"{scope['method']} {scope['path']}",
                context=parent,
                kind=SpanKind.SERVER,
                record_exception=False,
                set_status_on_exception=False,
            )
            span = span_cm.__enter__()
        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            if not response_started and unstorable_text(exc):
                # Bad input the validation let through and the database refused (wherever it
                # surfaced, a dependency's commit included): the client's error, not ours.
                response = render_exception(Request(scope), exc)
                assert response is not None
                await response(scope, receive, send_with_request_id)
                return
            if span is not None and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            status = 500
            response = problem_response(
                status=500,
                code="internal_error",
                title="Internal server error",
                detail="An unexpected error occurred; quote the request_id when reporting it.",
                instance=scope["path"],
            )
            await response(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template).observe(elapsed)
            if self.access_log and not scope["path"].startswith(_UNLOGGED_PREFIXES):
                logger.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={"status": status, "duration_ms": round(elapsed * 1000, 2), "route": template},
                )
            if span_cm is not None and span is not None:
                if span.is_recording():
                    span.update_name(f"{method} {template}")
                    span.set_attributes(
                        {
                            "http.request.method": method,
                            "http.route": template,
                            "url.path": scope["path"],
                            "http.response.status_code": status,
                            "sluice.request_id": request_id,
                        }
                    )
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                span_cm.__exit__(None, None, None)
            request_id_var.reset(token)
