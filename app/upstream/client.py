"""The partner API client: one per upstream, shared by every request of the process.

Order of a call (seed 000, nodes E→N): breaker check, access token, the HTTP call with the
bearer token and trace context, one refresh-and-retry on 401, then response mapping.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from opentelemetry.trace import Tracer

from app.observability import UPSTREAM_LATENCY, UPSTREAM_REQUESTS
from app.redis import Redis
from app.settings import Settings
from app.upstream.breaker import Breaker, StateListener
from app.upstream.errors import (
    TOKEN_INVALIDATING_CODES,
    PartnerAuthFailed,
    PartnerError,
    PartnerServerError,
    PartnerTimeout,
    UpstreamError,
    UpstreamFailure,
    envelope_error,
    error_for_code,
    transport_error,
)
from app.upstream.tokens import AccessToken, TokenManager

logger = logging.getLogger("sluice.upstream")


@dataclass(slots=True)
class UpstreamExchange:
    """What the upstream call did, for the communication log of the request that made it."""

    url: str | None = None
    status: int | None = None
    duration_ms: float | None = None
    attempts: int = 0


exchange_var: ContextVar[UpstreamExchange | None] = ContextVar("sluice_upstream_exchange", default=None)


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    data: Any
    header: dict[str, Any] = field(default_factory=dict)


def _decode(content: bytes) -> Any:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


class PartnerClient:
    def __init__(
        self,
        name: str,
        *,
        settings: Settings,
        redis: Redis,
        tracer: Tracer,
        base_url: str,
        on_breaker_change: StateListener | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._tracer = tracer
        limits = httpx.Limits(
            max_connections=settings.partner_max_connections,
            max_keepalive_connections=settings.partner_max_connections,
        )
        # httpx's own transport collapses under concurrency; aiohttp's does not (LESSONS.md).
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(settings.partner_timeout),
            transport=transport or AiohttpTransport(limits=limits, trust_env=False),
        )
        self.tokens = TokenManager(
            name,
            settings=settings,
            redis=redis,
            http=self.http,
            token_url=self.base_url + settings.partner_token_path,
            tracer=tracer,
        )
        self.breaker = Breaker(
            name,
            fail_max=settings.breaker_fail_max,
            reset_timeout=settings.breaker_reset_timeout,
            on_state_change=on_breaker_change,
        )

    async def aclose(self) -> None:
        await self.tokens.close()
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> UpstreamResponse:
        """Call the partner and return its `data`, or raise the mapped UpstreamError."""
        with self._tracer.start_as_current_span(
            f"upstream {self.name} {endpoint}",
            attributes={"upstream": self.name, "upstream.endpoint": endpoint, "http.method": method},
        ):
            try:

                async def attempt() -> tuple[httpx.Response, AccessToken]:
                    return await self._call_with_token(method, path, endpoint, params, json, headers)

                response, token = await self.breaker.call(attempt)
            except UpstreamError as exc:
                if exc.code == "circuit_open":
                    UPSTREAM_REQUESTS.labels(self.name, endpoint, "circuit_open").inc()
                raise
            return await self._handle(response, token)

    async def _call_with_token(
        self,
        method: str,
        path: str,
        endpoint: str,
        params: dict[str, Any] | None,
        body: Any,
        headers: dict[str, str] | None,
    ) -> tuple[httpx.Response, AccessToken]:
        content = orjson.dumps(body) if body is not None else None
        token = await self.tokens.get()
        response = await self._send(method, path, endpoint, params, content, headers, token)
        if response.status_code == 401:
            # The token may have been revoked early: replace it (only if still the cached one)
            # and retry exactly once.
            logger.info("partner %s rejected the access token; refreshing and retrying once", self.name)
            await self.tokens.invalidate(token)
            token = await self.tokens.get()
            response = await self._send(method, path, endpoint, params, content, headers, token)
        if response.status_code >= 500:
            code, message = envelope_error(_decode(response.content))
            raise UpstreamFailure(
                PartnerServerError(
                    f"The partner answered HTTP {response.status_code}",
                    upstream=self.name,
                    partner_status=response.status_code,
                    partner_code=code,
                    partner_message=message,
                )
            )
        return response, token

    async def _send(
        self,
        method: str,
        path: str,
        endpoint: str,
        params: dict[str, Any] | None,
        content: bytes | None,
        headers: dict[str, str] | None,
        token: AccessToken,
    ) -> httpx.Response:
        request_headers = {"Authorization": f"Bearer {token.value}", "Accept": "application/json"}
        if content is not None:
            request_headers["Content-Type"] = "application/json"
        if headers:
            request_headers.update(headers)
        exchange = exchange_var.get()
        started = time.perf_counter()
        status_label = "transport_error"
        try:
            response = await self.http.request(
                method, path, params=params, content=content, headers=request_headers
            )
            status_label = str(response.status_code)
            return response
        except httpx.TransportError as exc:
            error = transport_error(exc, upstream=self.name, what=f"{self.name} {endpoint}")
            status_label = "timeout" if isinstance(error, PartnerTimeout) else "transport_error"
            raise UpstreamFailure(error) from exc
        finally:
            elapsed = time.perf_counter() - started
            UPSTREAM_REQUESTS.labels(self.name, endpoint, status_label).inc()
            UPSTREAM_LATENCY.labels(self.name, endpoint).observe(elapsed)
            if exchange is not None:
                exchange.url = f"{self.base_url}{path}"
                exchange.status = int(status_label) if status_label.isdigit() else None
                exchange.duration_ms = round(elapsed * 1000, 2)
                exchange.attempts += 1

    async def _handle(self, response: httpx.Response, token: AccessToken) -> UpstreamResponse:
        status = response.status_code
        body = _decode(response.content)
        if 200 <= status <= 202:
            if isinstance(body, dict) and "header" in body:
                header = body.get("header") if isinstance(body.get("header"), dict) else {}
                return UpstreamResponse(status=status, data=body.get("data"), header=header or {})
            return UpstreamResponse(status=status, data=body)
        code, message = envelope_error(body)
        if status == 401:
            raise PartnerAuthFailed(
                "The partner rejected a freshly issued access token",
                upstream=self.name,
                partner_status=status,
                partner_code=code,
                partner_message=message,
            )
        if code in TOKEN_INVALIDATING_CODES:
            await self.tokens.invalidate(token)
        if body is None and response.content:
            raise PartnerError(
                f"The partner answered HTTP {status} with a body that is not JSON",
                upstream=self.name,
                partner_status=status,
            )
        raise error_for_code(code, upstream=self.name, status=status, message=message)
