"""The throttling API's errors, in the original's envelope (seed 004).

    {"status": 400, "error": "<JSON string: code, family, message, service, version, context[, schema]>",
     "requestId": "..."}

The numeric codes and their messages are the original's. Validation errors carry the
original's string codes (ERR_THROTTLING_CONFIG_1xx). A few situations the original does not
document get codes of Sluice's own, listed in the README: 4001 (a required header is missing)
and 4003 (the organisation header does not match the API key's organisation).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from app import __version__
from app.observability import request_id_var

SERVICE = "sluice-authoring-api"

INPUT_OUTPUT = "INPUT_OUTPUT_ERROR"
INTERNAL = "INTERNAL_ERROR"
VALIDATION = "VALIDATION_ERROR"
AUTHORIZATION = "AUTHORIZATION_ERROR"


class AuthoringError(Exception):
    def __init__(
        self,
        status: int,
        code: int | str,
        message: str,
        *,
        family: str = INPUT_OUTPUT,
        context: str = "app.throttling",
        schema: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.family = family
        self.context = context
        self.schema = schema


def validation_error(number: int, message: str) -> AuthoringError:
    return AuthoringError(
        400,
        f"ERR_THROTTLING_CONFIG_{number}",
        f"throttling config: {message}",
        family=VALIDATION,
        context="app.throttling.validation",
    )


# The original's numbered errors: (HTTP status, family, message).
CATALOGUE: dict[int, tuple[int, str, str]] = {
    1456: (400, INPUT_OUTPUT, "Can't delete a deployed throttling config. Undeploy it before deleting it."),
    1457: (500, INTERNAL, "Can't delete throttling config due to an unexpected error"),
    1458: (500, INTERNAL, "Can't deploy throttling config due to an unexpected error"),
    1459: (500, INTERNAL, "Can't undeploy throttling config due to an unexpected error"),
    1460: (500, INTERNAL, "Can't get throttling config due to an unexpected error"),
    1461: (400, INPUT_OUTPUT, "Can't update throttling config: runtime version is not active"),
    1462: (500, INTERNAL, "Can't update throttling config due to an unexpected error"),
    1463: (400, INPUT_OUTPUT, "Operation not allowed on throttling config: non prod sandbox"),
    1464: (500, INTERNAL, "Can't create throttling config due to an unexpected error"),
    1465: (400, INPUT_OUTPUT, "Can't create throttling config: only one config allowed per org"),
    14466: (400, INPUT_OUTPUT, "Can't deploy throttling config: already deployed"),
    14467: (404, INPUT_OUTPUT, "Throttling config not found"),
    14468: (400, INPUT_OUTPUT, "Can't undeploy throttling config: not deployed yet"),
    # The original answers an unknown sandbox with this body and HTTP 500; a server error for
    # a client's mistake is a bug, so Sluice keeps the body and answers 404.
    4000: (404, INTERNAL, "INTERNAL ERROR"),
}


def numbered(code: int, *, context: str = "app.throttling", schema: str | None = None) -> AuthoringError:
    status, family, message = CATALOGUE[code]
    return AuthoringError(status, code, message, family=family, context=context, schema=schema)


def render(exc: AuthoringError) -> Response:
    error: dict[str, Any] = {
        "code": exc.code,
        "family": exc.family,
        "message": exc.message,
        "service": SERVICE,
        "version": __version__,
        "context": exc.context,
    }
    if exc.schema is not None:
        error["schema"] = exc.schema
    body = {"status": exc.status, "error": orjson.dumps(error).decode(), "requestId": request_id_var.get()}
    return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json")


async def handle(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthoringError)
    return render(exc)
