"""What the lifespan creates and the loops and dependencies share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from app.commlog.service import CommLogWriter
    from app.notify import Notifier
    from app.redis import Redis
    from app.security import Authenticator
    from app.settings import Settings
    from app.upstream.client import PartnerClient


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    tracer: Tracer
    tracer_provider: TracerProvider | None
    authenticator: Authenticator
    notifier: Notifier
    commlog: CommLogWriter
    partner: PartnerClient
