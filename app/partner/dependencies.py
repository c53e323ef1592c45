"""Handler validation (seed 000, nodes G1–G3) as FastAPI dependencies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.errors import InvalidHeader, MissingHeader, UnsupportedMediaType
from app.partner.schemas import ProductQuery
from app.state import AppState
from app.upstream.client import PartnerClient

_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_LANGUAGE = re.compile(r"^[A-Za-z0-9-]{1,35}$")


@dataclass(frozen=True, slots=True)
class CallerContext:
    """Who is calling (X-Client-ID), in which language, and the partner client to call."""

    client_id: str
    language: str
    partner: PartnerClient

    def partner_headers(self) -> dict[str, str]:
        return {"X-Language-ID": self.language, "X-Client-ID": self.client_id}


def _first_language(accept_language: str) -> str | None:
    # "id-ID,id;q=0.9,en;q=0.8" -> "id-ID": the caller's first choice.
    first = accept_language.split(",")[0].split(";")[0].strip()
    return first if first and first != "*" else None


async def caller_context(request: Request) -> CallerContext:
    """Mandatory headers: X-Client-ID, and the language from X-Language-ID or Accept-Language."""
    client_id = request.headers.get("x-client-id", "").strip()
    if not client_id:
        raise MissingHeader("X-Client-ID")
    if not _CLIENT_ID.match(client_id):
        raise InvalidHeader("X-Client-ID", "X-Client-ID must be 1-128 visible ASCII characters")
    language = request.headers.get("x-language-id", "").strip()
    if not language:
        language = _first_language(request.headers.get("accept-language", "")) or ""
    if not language:
        raise MissingHeader("X-Language-ID", "Send the language in X-Language-ID or Accept-Language")
    if not _LANGUAGE.match(language):
        raise InvalidHeader("X-Language-ID", "The language must be a language tag such as en or id-ID")
    state: AppState = request.app.state.sluice
    return CallerContext(client_id=client_id, language=language, partner=state.partner)


async def require_json_body(request: Request) -> None:
    """A request with a body must declare it as JSON (415 otherwise)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    raise UnsupportedMediaType(
        f"Send the body as application/json (got {media_type or 'no Content-Type'})",
        extra={"accepted": ["application/json"]},
    )


async def product_query(request: Request) -> ProductQuery:
    """The query of GET /v1/products, validated by its model.

    Validated here rather than with a `Query()` model parameter: FastAPI re-inspects such a
    model's annotations on every request, which measured as the largest single cost of the route.
    """
    try:
        return ProductQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [
            {**e, "loc": ["query", *e["loc"]]} for e in exc.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


def query_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `parameters` describing `model` as query parameters (for openapi_extra)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return {
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in prop.items() if k != "title"},
                **({"description": prop["description"]} if "description" in prop else {}),
            }
            for name, prop in schema["properties"].items()
        ]
    }


CallerDep = Annotated[CallerContext, Depends(caller_context)]
ProductQueryDep = Annotated[ProductQuery, Depends(product_query)]
