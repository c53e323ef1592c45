"""Tracing: server span, token spans, the upstream client span, traceparent to the partner."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import Sandbox


@pytest.mark.parametrize("server_spans", ["sluice", "otel"])
async def test_spans_and_propagation(start_app: Any, sandbox: Sandbox, server_spans: str) -> None:
    exporter = InMemorySpanExporter()
    async with start_app(tracing_server_spans=server_spans) as sluice:
        sluice.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        response = await sluice.client.get("/v1/products", headers=sluice.headers())
        assert response.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["GET /v1/products"]
    upstream = spans["GET partner product-list"]
    refresh = spans["token.refresh"]
    lock_wait = spans["token.lock_wait"]
    trace_id = server.context.trace_id
    assert {upstream.context.trace_id, refresh.context.trace_id, lock_wait.context.trace_id} == {trace_id}
    assert upstream.attributes["http.response.status_code"] == 200
    sent = (await sandbox.stats())["last_request"]["headers"]["traceparent"]
    assert sent.split("-")[1] == format(trace_id, "032x")
    assert sent.split("-")[2] == format(upstream.context.span_id, "016x")


async def test_sampling_ratio_zero_records_nothing_but_keeps_ids(start_app: Any, sandbox: Sandbox) -> None:
    exporter = InMemorySpanExporter()
    async with start_app(trace_sample_ratio=0.0) as sluice:
        sluice.state.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200
    assert exporter.get_finished_spans() == ()
    sent = (await sandbox.stats())["last_request"]["headers"]["traceparent"]
    assert int(sent.split("-")[3], 16) & 1 == 0  # propagated, marked not sampled


async def test_tracing_disabled(start_app: Any, sandbox: Sandbox) -> None:
    async with start_app(tracing_enabled=False) as sluice:
        assert sluice.state.tracer_provider is None
        assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200
    assert "traceparent" not in (await sandbox.stats())["last_request"]["headers"]
