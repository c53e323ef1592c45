"""POST a call's result to its `$reply` URL (and reports to error URLs), signed.

The envelope is `{"$reply_id", "status", "content_type", "data"}` for a JSON response, with
`"b64_body"` instead of `"data"` otherwise. Only a 2xx within the timeout counts as delivered;
410 Gone stops the retries; a Retry-After (seconds or HTTP date) sets the next attempt.
Redirects are not followed: the address was checked, its redirect target would not be.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from app.airlock.machine import Outcome
from app.airlock.models import AsyncCall
from app.airlock.signing import signed_headers
from app.airlock.urls import InvalidReplyUrl, PolicyResolver, UrlPolicy
from app.settings import Settings

USER_AGENT = "Sluice-Airlock/1"


def envelope(call: AsyncCall) -> bytes:
    """The reply body for a call with a stored response."""
    content_type = call.response_content_type
    payload: dict[str, Any] = {
        "$reply_id": str(call.id),
        "status": call.response_status,
        "content_type": content_type,
    }
    body = call.response_body or b""
    data: Any = None
    is_json = content_type is not None and "json" in content_type.split(";")[0]
    if is_json:
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            is_json = False
    if is_json:
        payload["data"] = data
    else:
        payload["b64_body"] = base64.b64encode(body).decode()
    return orjson.dumps(payload)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


class Sender:
    """One aiohttp session for every outbound webhook of the process."""

    def __init__(self, settings: Settings, policy: UrlPolicy) -> None:
        self._policy = policy
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                resolver=PolicyResolver(policy),
                limit=max(settings.airlock_concurrency, 10),
                ttl_dns_cache=None,
            ),
            timeout=aiohttp.ClientTimeout(total=settings.airlock_reply_timeout),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def post(
        self, url: str, body: bytes, *, msg_id: str, secrets: list[str], now: datetime
    ) -> tuple[Outcome, float]:
        """POST a signed body; the outcome for the state machine and the latency in ms."""
        started = time.perf_counter()
        try:
            self._policy.check(url)
        except InvalidReplyUrl as exc:
            return Outcome(error=f"refused: {exc.detail}"), 0.0
        headers = signed_headers(secrets, msg_id, int(now.timestamp()), body)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                status = response.status
                wait = retry_after(response.headers.get("Retry-After"), now)
        except TimeoutError:
            return Outcome(error="timeout: no answer in time"), _ms(started)
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome(error=f"unreachable: {type(exc).__name__}: {exc}"[:1000]), _ms(started)
        latency = _ms(started)
        if 200 <= status < 300:
            return Outcome(ok=True, http_status=status), latency
        if status == 410:
            return Outcome(gone=True, http_status=status, error="the receiver answered 410 Gone"), latency
        return Outcome(
            http_status=status, error=f"the receiver answered HTTP {status}", retry_after=wait
        ), latency


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
