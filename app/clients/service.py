"""Create, list, revoke and authenticate API clients."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.models import ApiClient
from app.db import utcnow
from app.settings import ALL_SCOPES

KEY_PREFIX = "sk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    id: str
    name: str
    org_id: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def hash_key(key: str) -> str:
    """SHA-256 of an API key: keys are 256-bit random, so a fast hash is enough (no brute force)."""
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> str:
    """A new random API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def validate_scopes(scopes: Iterable[str]) -> list[str]:
    """Reject unknown scope names; return them de-duplicated and sorted."""
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in ALL_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}")
    if not wanted:
        raise ValueError("at least one scope is required")
    return wanted


async def create_client(
    session: AsyncSession, *, name: str, org_id: str, scopes: Iterable[str], key: str | None = None
) -> tuple[ApiClient, str]:
    """Store a new client and return it with its plaintext key (shown once, never stored)."""
    key = key or generate_key()
    client = ApiClient(
        name=name,
        org_id=org_id,
        scopes=validate_scopes(scopes),
        key_prefix=key[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(key),
        is_active=True,
    )
    session.add(client)
    await session.flush()
    return client, key


async def list_clients(session: AsyncSession, *, include_revoked: bool = False) -> Sequence[ApiClient]:
    """All clients, newest first."""
    query = select(ApiClient).order_by(ApiClient.created_at.desc())
    if not include_revoked:
        query = query.where(ApiClient.is_active.is_(True))
    return (await session.scalars(query)).all()


async def revoke_client(session: AsyncSession, client_id: uuid.UUID | str) -> ApiClient | None:
    """Deactivate a client; its key stops working once caches expire (auth_cache_ttl)."""
    client = await session.get(ApiClient, uuid.UUID(str(client_id)))
    if client is None:
        return None
    client.is_active = False
    client.revoked_at = utcnow()
    await session.flush()
    return client


async def find_by_key_hash(session: AsyncSession, key_hash: str) -> Principal | None:
    """The active client with this key hash, marking it used."""
    client = await session.scalar(
        select(ApiClient).where(ApiClient.key_hash == key_hash, ApiClient.is_active.is_(True))
    )
    if client is None:
        return None
    client.last_used_at = utcnow()
    await session.flush()
    return Principal(
        id=str(client.id), name=client.name, org_id=client.org_id, scopes=frozenset(client.scopes)
    )
