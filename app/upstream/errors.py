"""Upstream errors, mapped in one place from what the partner answered.

The partner (Tokopedia-style) wraps every answer as {"header": {..., "error_code"}, "data"};
its error code decides the error Sluice raises (seed 000, node O1).
"""

from __future__ import annotations

import math
import re
from typing import Any

import aiohttp

from app.errors import SluiceError


class UpstreamError(SluiceError):
    """An error caused by (or about) an upstream; `retryable` says whether trying later may help."""

    retryable = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        upstream: str | None = None,
        partner_status: int | None = None,
        partner_code: str | None = None,
        partner_message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra: dict[str, Any] = {}
        if upstream:
            extra["upstream"] = upstream
        if partner_status is not None:
            extra["partner_status"] = partner_status
        if partner_code:
            extra["partner_code"] = partner_code
        if partner_message:
            extra["partner_message"] = partner_message
        super().__init__(detail, headers=headers, extra=extra)
        self.upstream = upstream
        self.partner_status = partner_status
        self.partner_code = partner_code
        self.partner_message = partner_message


class PartnerAuthFailed(UpstreamError):
    status, code, title = 502, "partner_auth_failed", "The partner rejected Sluice's credentials"


class PartnerForbidden(UpstreamError):
    status, code, title = 403, "partner_forbidden", "The partner refused the request"


class BillNotValid(UpstreamError):
    status, code, title = 422, "bill_not_valid", "The bill is not valid"


class ProductClosed(UpstreamError):
    status, code, title = 409, "product_closed", "The product is closed or unavailable"


class PartnerError(UpstreamError):
    status, code, title = 502, "partner_error", "The partner answered with an error"


class PartnerServerError(PartnerError):
    """A 5xx from the partner: counts against the breaker and may succeed later."""

    retryable = True


class PartnerTimeout(UpstreamError):
    status, code, title = 504, "partner_timeout", "The partner did not answer in time"
    retryable = True


class PartnerUnreachable(UpstreamError):
    status, code, title = 502, "partner_unreachable", "The partner could not be reached"
    retryable = True


class CircuitOpen(UpstreamError):
    status, code, title = 503, "circuit_open", "The partner is failing; calls are paused"
    retryable = True


class Throttled(UpstreamError):
    """The organisation's throttling configuration has no slot soon enough for this call."""

    status, code, title = 429, "throttled", "Too many calls to this endpoint: the throttling limit is reached"
    # Tried later, the call gets a slot (the airlock backs off and tries again).
    retryable = True

    def __init__(self, detail: str, *, wait: float, config_uid: str) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, math.ceil(wait)))})
        self.wait = wait
        self.config_uid = config_uid


class ThrottleQueued(Throttled):
    """A slot was reserved `wait` seconds from now: the call is to be stored and run then.

    Raised only for calls that may go asynchronous (a `$reply` was given, or the airlock is
    running it); the slot is already counted, so the later attempt takes no other.
    """

    def __init__(self, detail: str, *, wait: float, config_uid: str, version: int, slot: float) -> None:
        super().__init__(detail, wait=wait, config_uid=config_uid)
        self.version = version
        # The reserved slot, as Unix time on Redis's clock (the limiter's clock).
        self.slot = slot


class DeferredCall(Exception):
    """Raised instead of calling the partner when the request is to run later (the airlock)."""


class UpstreamFailure(Exception):
    """Raised inside the breaker for failures that count against it (transport, timeout, 5xx).

    It carries the error to answer; the breaker wrapper unwraps it.
    """

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


def transport_error(exc: BaseException, *, upstream: str, what: str) -> UpstreamError:
    """PartnerTimeout or PartnerUnreachable for an exception raised by the HTTP client."""
    if isinstance(exc, TimeoutError):
        return PartnerTimeout(f"No answer from {what} in time", upstream=upstream)
    return PartnerUnreachable(f"{what} could not be reached ({type(exc).__name__})", upstream=upstream)


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


_P_CODE = re.compile(r"^P(0[1-9]|1[0-9])$")
_U_CODE = re.compile(r"^U0[1-3]$")
_S_CODE = re.compile(r"^S0[0-4]$")
TOKEN_INVALIDATING_CODES = frozenset({"P08"})


def envelope_error(body: Any) -> tuple[str | None, str | None]:
    """The partner's (error_code, message) from its envelope, if any."""
    if not isinstance(body, dict):
        return None, None
    header = body.get("header")
    if not isinstance(header, dict):
        return None, None
    code = header.get("error_code") or None
    message = header.get("reason") or header.get("messages") or None
    return (str(code) if code else None), (str(message) if message else None)


def error_for_code(code: str | None, *, upstream: str, status: int, message: str | None) -> UpstreamError:
    """The typed error for a partner error code (seed 000: P08, U01-U03, P01-P19, S00-S04)."""
    kwargs: dict[str, Any] = dict(
        upstream=upstream, partner_status=status, partner_code=code, partner_message=message
    )
    if code and _U_CODE.match(code):
        return BillNotValid(message, **kwargs)
    if code and _P_CODE.match(code):
        return PartnerForbidden(message, **kwargs)
    if code and _S_CODE.match(code):
        return ProductClosed(message, **kwargs)
    detail = f"The partner answered HTTP {status}" + (f" with code {code}" if code else "")
    return PartnerError(detail, **kwargs)
