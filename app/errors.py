"""The error hierarchy and the one JSON error format: application/problem+json (RFC 9457).

Every error Sluice answers carries a stable `code` (clients branch on it) and the `request_id`
(operators search logs with it). Domain errors subclass `SluiceError`; one handler renders them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.db import STORABLE_TEXT
from app.observability import current_request_id

PROBLEM_CONTENT_TYPE = "application/problem+json"
logger = logging.getLogger("sluice.errors")


class SluiceError(Exception):
    """Base of every error Sluice answers on purpose."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(SluiceError):
    status, code, title = 400, "bad_request", "Bad request"


class MissingHeader(SluiceError):
    status, code, title = 400, "missing_header", "A mandatory header is missing"

    def __init__(self, header: str, detail: str | None = None) -> None:
        super().__init__(detail or f"Header {header} is required", extra={"header": header})


class InvalidHeader(SluiceError):
    status, code, title = 400, "invalid_header", "A header has an invalid value"

    def __init__(self, header: str, detail: str) -> None:
        super().__init__(detail, extra={"header": header})


class Unauthorized(SluiceError):
    status, code, title = 401, "unauthorized", "Missing or invalid credentials"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="sluice"'})


class Forbidden(SluiceError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(SluiceError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(SluiceError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class UnsupportedMediaType(SluiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(SluiceError):
    status, code, title = 422, "validation_error", "The request is not valid"


class Conflict(SluiceError):
    status, code, title = 409, "conflict", "The request conflicts with the resource's state"


class PreconditionFailed(SluiceError):
    status, code, title = 412, "precondition_failed", "The resource changed since you read it"


class PreconditionRequired(SluiceError):
    status, code, title = 428, "precondition_required", "This request must be conditional (If-Match)"


class ServiceUnavailable(SluiceError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


def problem_body(
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None,
    instance: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:sluice:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
        "request_id": current_request_id(),
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if extra:
        body.update(extra)
    return body


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = problem_body(status=status, code=code, title=title, detail=detail, instance=instance, extra=extra)
    return Response(
        orjson.dumps(body), status_code=status, headers=dict(headers or {}), media_type=PROBLEM_CONTENT_TYPE
    )


def render_sluice_error(request: Request | None, exc: SluiceError) -> Response:
    return problem_response(
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        instance=request.url.path if request is not None else None,
        extra=exc.extra,
        headers=exc.headers,
    )


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Missing or invalid credentials"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload_too_large", "Payload too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("too_many_requests", "Too many requests"),
}


def render_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail.lower() != title.lower() else None
    return problem_response(
        status=exc.status_code,
        code=code,
        title=title,
        detail=detail,
        instance=request.url.path,
        headers=exc.headers,
    )


def _jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        message = err.get("msg")
        if (
            err.get("type") == "string_pattern_mismatch"
            and (err.get("ctx") or {}).get("pattern") == STORABLE_TEXT
        ):
            message = "must not contain the NUL character (\\u0000), which cannot be stored"
        item = {"loc": list(err.get("loc", ())), "msg": message, "type": err.get("type")}
        errors.append(item)
    return errors


def render_validation_error(request: Request, exc: RequestValidationError) -> Response:
    errors = _jsonable_errors(exc)
    # A body that is not JSON at all is a malformed request, not a semantic validation error.
    if any(e["type"] == "json_invalid" for e in errors):
        return problem_response(
            status=400,
            code="invalid_json",
            title="The request body is not valid JSON",
            instance=request.url.path,
            extra={"errors": errors},
        )
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem_response(
        status=422,
        code="validation_error",
        title="The request is not valid",
        detail=summary,
        instance=request.url.path,
        extra={"errors": errors},
    )


# SQLSTATEs of a text value the database cannot store: PostgreSQL takes no NUL character
# (U+0000) in text (22021), nor a character its encoding lacks (22P05).
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def unstorable_text(exc: BaseException) -> bool:
    """True when the database refused a text value of the request that it cannot store."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in _UNSTORABLE_TEXT:
            return True
        # SQLAlchemy keeps the driver's error in `orig`; its asyncpg adapter chains asyncpg's.
        current = getattr(current, "orig", None) or current.__cause__
    return False


def unstorable_text_error() -> ValidationFailed:
    return ValidationFailed(
        "A text value contains a character that cannot be stored (the NUL character, \\u0000): remove it"
    )


def render_exception(request: Request, exc: Exception) -> Response | None:
    """Render a known exception as problem+json; None for an unexpected one."""
    if isinstance(exc, SluiceError):
        return render_sluice_error(request, exc)
    if unstorable_text(exc):
        return render_sluice_error(request, unstorable_text_error())
    if isinstance(exc, RequestValidationError):
        return render_validation_error(request, exc)
    if isinstance(exc, StarletteHTTPException):
        return render_http_exception(request, exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def _sluice(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SluiceError)
        return render_sluice_error(request, exc)

    async def _validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_validation_error(request, exc)

    async def _http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return render_http_exception(request, exc)

    app.add_exception_handler(SluiceError, _sluice)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
