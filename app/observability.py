"""Structured logs, Prometheus metrics and OpenTelemetry tracing.

Logs are JSON lines that carry the request id and the trace id of whatever request or span
is current, so one id finds a request's log lines, its comm-log row and its trace.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING

from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from pythonjsonlogger.json import JsonFormatter

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from app.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("sluice_request_id", default=None)


def current_request_id() -> str | None:
    return request_id_var.get()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


# --- metrics --------------------------------------------------------------------------------
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

HTTP_REQUESTS = Counter("sluice_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "sluice_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
UPSTREAM_REQUESTS = Counter(
    "sluice_upstream_requests_total",
    "Calls to upstream APIs by outcome (HTTP status, timeout, transport_error, circuit_open)",
    ["upstream", "endpoint", "status"],
)
UPSTREAM_LATENCY = Histogram(
    "sluice_upstream_request_duration_seconds",
    "Duration of upstream API calls",
    ["upstream", "endpoint"],
    buckets=_LATENCY_BUCKETS,
)
BREAKER_STATE = Gauge(
    "sluice_breaker_state", "Circuit breaker state (0 closed, 1 half-open, 2 open)", ["upstream"]
)
BREAKER_TRANSITIONS = Counter(
    "sluice_breaker_transitions_total", "Circuit breaker state changes", ["upstream", "state"]
)
TOKEN_REFRESHES = Counter(
    "sluice_token_refreshes_total", "Access-token requests made to upstreams", ["upstream", "outcome"]
)


# --- logging --------------------------------------------------------------------------------
class _ContextFilter(logging.Filter):
    """Stamps each record with the current request id and trace id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "trace_id"):
            record.trace_id = current_trace_id()
        return True


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once per process (JSON lines on stderr by default)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")
        )
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_sluice", False):
            root.removeHandler(old)
    handler._sluice = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # One line per outbound request is noise; upstream calls are in the comm log and metrics.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # uvicorn's own access log duplicates ours; its error log stays.
    logging.getLogger("uvicorn.access").handlers.clear()
    logging.getLogger("uvicorn.access").propagate = False


# --- tracing --------------------------------------------------------------------------------
def setup_tracing(settings: Settings) -> TracerProvider | None:
    """A tracer provider whose exporter follows the standard OTEL_TRACES_EXPORTER variable.

    The provider is kept per app rather than installed globally so that several apps (tests,
    the mounted sandbox) can live in one process.
    """
    if not settings.tracing_enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", "sluice"),
            "service.instance.id": settings.instance_name,
            "deployment.environment": settings.environment,
        }
    )
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)), resource=resource
    )
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "none").lower()
    for name in (e.strip() for e in exporters.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name not in ("", "none"):
            logging.getLogger("sluice.tracing").warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return provider
