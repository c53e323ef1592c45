"""What the lifespan creates and the loops and dependencies share."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from app.airlock.urls import UrlPolicy
    from app.commlog.service import CommLogWriter
    from app.notify import Notifier
    from app.orders.sync import OrderSync
    from app.redis import Redis
    from app.security import Authenticator
    from app.settings import Settings
    from app.throttling.limiter import ThrottleGate
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
    url_policy: UrlPolicy
    throttle: ThrottleGate
    order_sync: OrderSync
    # The app itself: the airlock's delivery loop replays stored calls through its routes.
    app: FastAPI | None = None
    # Set when a call becomes due in this process (wakes the delivery loop without Postgres NOTIFY).
    airlock_wake: asyncio.Event = field(default_factory=asyncio.Event)
