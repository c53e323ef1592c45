"""Registering, resolving and health-checking the directory's services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import httpx
from prometheus_client import Gauge
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import utcnow
from app.directory import crypto
from app.directory.models import DirectoryService
from app.directory.schemas import ServiceIn, ServiceOut, ServiceUpdate
from app.errors import Conflict, NotFound
from app.settings import Settings

logger = logging.getLogger("sluice.directory")

SERVICE_UP = Gauge("sluice_directory_service_up", "1 when the service's health URL answered 2xx", ["service"])


def to_out(service: DirectoryService, settings: Settings, *, with_credentials: bool) -> ServiceOut:
    credentials = None
    if with_credentials and service.credentials_encrypted is not None:
        credentials = crypto.decrypt(settings, service.credentials_encrypted)
    return ServiceOut(
        name=service.name,
        base_url=service.base_url,
        stage=service.stage,
        description=service.description,
        tags=list(service.tags or []),
        health_url=service.health_url,
        has_credentials=service.credentials_encrypted is not None,
        credentials=credentials,
        health_status=service.health_status,
        last_checked_at=service.last_checked_at,
        last_seen_at=service.last_seen_at,
        last_health_error=service.last_health_error,
        created_at=service.created_at,
        updated_at=service.updated_at,
    )


def _fill(service: DirectoryService, data: ServiceIn | ServiceUpdate, settings: Settings) -> None:
    service.base_url = str(data.base_url).rstrip("/")
    service.stage = data.stage
    service.description = data.description
    service.tags = list(dict.fromkeys(data.tags))
    health = str(data.health_url) if data.health_url else None
    if health != service.health_url:
        service.health_url = health
        service.health_status = "unknown" if health else "unchecked"
        service.last_health_error = None
    if data.credentials is not None:
        service.credentials_encrypted = (
            crypto.encrypt(settings, data.credentials) if data.credentials else None
        )


async def register(session: AsyncSession, data: ServiceIn, settings: Settings) -> DirectoryService:
    if await session.get(DirectoryService, data.name) is not None:
        raise Conflict(f"A service named {data.name} is already registered (PUT to change it)")
    service = DirectoryService(
        name=data.name, health_status="unchecked", created_at=utcnow(), updated_at=utcnow()
    )
    _fill(service, data, settings)
    session.add(service)
    try:
        await session.commit()
    except IntegrityError:
        # Registered meanwhile by a concurrent request: the same answer as when seen above.
        await session.rollback()
        raise Conflict(f"A service named {data.name} is already registered (PUT to change it)") from None
    return service


async def get(session: AsyncSession, name: str) -> DirectoryService:
    service = await session.get(DirectoryService, name)
    if service is None:
        raise NotFound(f"No service named {name!r} in the directory")
    return service


async def update(
    session: AsyncSession, name: str, data: ServiceUpdate, settings: Settings
) -> DirectoryService:
    service = await get(session, name)
    _fill(service, data, settings)
    service.updated_at = utcnow()
    await session.commit()
    return service


async def remove(session: AsyncSession, name: str) -> None:
    service = await get(session, name)
    await session.delete(service)
    await session.commit()
    with contextlib.suppress(KeyError):
        SERVICE_UP.remove(name)


async def list_services(
    session: AsyncSession, *, tag: str | None, stage: str | None
) -> list[DirectoryService]:
    rows = (await session.scalars(select(DirectoryService).order_by(DirectoryService.name))).all()
    return [s for s in rows if (tag is None or tag in (s.tags or [])) and (stage is None or s.stage == stage)]


async def check_all(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Check every health URL once (bounded concurrency); return how many were checked."""
    async with sessionmaker() as session:
        targets = [
            (s.name, s.health_url)
            for s in (await session.scalars(select(DirectoryService))).all()
            if s.health_url
        ]
    gate = asyncio.Semaphore(10)
    async with httpx.AsyncClient(timeout=settings.directory_health_timeout, follow_redirects=False) as http:

        async def one(name: str, url: str) -> None:
            async with gate:
                checked = utcnow()
                error: str | None = None
                try:
                    response = await http.get(url)
                    if not response.is_success:
                        error = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:500]
                await _record(sessionmaker, name, url, checked, error)

        await asyncio.gather(*(one(name, url) for name, url in targets))
    return len(targets)


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, url: str, checked: datetime, error: str | None
) -> None:
    async with sessionmaker() as session:
        service = await session.get(DirectoryService, name, with_for_update=True)
        if service is None or service.health_url != url:
            return  # removed or changed while it was checked
        service.last_checked_at = checked
        service.health_status = "down" if error else "up"
        service.last_health_error = error
        if error is None:
            service.last_seen_at = checked
        await session.commit()
    SERVICE_UP.labels(name).set(0 if error else 1)


async def run_health_loop(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            await check_all(settings, sessionmaker)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("directory health check round failed")
        try:
            await asyncio.wait_for(stop.wait(), settings.directory_health_interval)
        except TimeoutError:
            pass
