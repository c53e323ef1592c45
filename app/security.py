"""Authentication and authorisation of API requests.

The key travels in `X-API-Key` or `Authorization: Bearer`. A successful lookup is kept in
process memory for `auth_cache_ttl` seconds so that the hot path costs no database round trip.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.service import Principal, find_by_key_hash, hash_key
from app.errors import Forbidden, Unauthorized
from app.settings import ALL_SCOPES, Settings

_NEGATIVE_TTL = 5.0
_PUBLIC_PATHS = ("/health/live", "/health/ready")
_CACHE_MAX = 10_000


class Authenticator:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = settings.auth_cache_ttl
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._bootstrap_hash: str | None = None
        self._bootstrap = Principal(
            id="bootstrap",
            name="bootstrap admin",
            org_id=settings.bootstrap_org_id,
            scopes=frozenset(ALL_SCOPES),
        )
        if settings.bootstrap_admin_key is not None and settings.bootstrap_admin_key.get_secret_value():
            self._bootstrap_hash = hash_key(settings.bootstrap_admin_key.get_secret_value())

    async def authenticate(self, key: str) -> Principal | None:
        """The principal owning `key`, or None."""
        return await self.authenticate_digest(hash_key(key))

    async def authenticate_digest(self, digest: str) -> Principal | None:
        """The principal whose key hashes to `digest`, or None."""
        if self._bootstrap_hash is not None and hmac.compare_digest(digest, self._bootstrap_hash):
            return self._bootstrap
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._sessionmaker.begin() as session:
            principal = await find_by_key_hash(session, digest)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (principal, now + (self._ttl if principal else _NEGATIVE_TTL))
        return principal

    def forget(self) -> None:
        """Drop every cached lookup (after a revocation in this process)."""
        self._cache.clear()


def extract_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


async def authenticate_request(request: Request) -> Principal:
    """The request's principal, or 401."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return principal  # type: ignore[no-any-return]
    key = extract_key(request)
    if not key:
        raise Unauthorized("Send an API key in X-API-Key or Authorization: Bearer")
    authenticator: Authenticator = request.app.state.sluice.authenticator
    principal = await authenticator.authenticate(key)
    if principal is None:
        raise Unauthorized("The API key is not valid or has been revoked")
    request.state.principal = principal
    return principal


def require_scopes(*scopes: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates and demands every scope in `scopes` (admin has all)."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate_request(request)
        missing = [s for s in scopes if not principal.has(s)]
        if missing:
            raise Forbidden(
                f"This API key lacks the scope(s): {', '.join(missing)}", extra={"missing_scopes": missing}
            )
        return principal

    dependency.__name__ = f"require_{'_'.join(scopes) or 'auth'}"
    return dependency


def document_security(app: FastAPI) -> None:
    """Declare the API-key schemes in the OpenAPI document, so /docs offers "Authorize".

    Done on the document rather than with Security() dependencies: those would run on every
    request only to describe the API.
    """
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {})
        components["securitySchemes"] = {
            "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "HTTPBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "The same API key as a bearer token",
            },
        }
        for path, item in schema.get("paths", {}).items():
            if path in _PUBLIC_PATHS:
                continue
            for operation in item.values():
                if isinstance(operation, dict):
                    operation["security"] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
