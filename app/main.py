"""create_app(): routers, middleware, exception handlers and the lifespan that owns resources."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from opentelemetry import trace

from app import __version__
from app.airlock import alerts as airlock_alerts
from app.airlock import worker as airlock_worker
from app.airlock.router import router as airlock_router
from app.airlock.urls import UrlPolicy
from app.commlog import worker as commlog_worker
from app.commlog.router import router as commlog_router
from app.commlog.service import CommLogWriter
from app.db import create_engine, create_sessionmaker
from app.directory import service as directory_service
from app.directory.router import router as directory_router
from app.errors import install_error_handlers
from app.health.router import router as health_router
from app.middleware import RequestContextMiddleware
from app.notify import ErrorEvent, Notifier
from app.observability import setup_logging, setup_tracing
from app.orders.router import router as orders_router
from app.orders.router import sync_router
from app.orders.sync import OrderSync
from app.partner.router import router as partner_router
from app.redis import create_redis
from app.security import Authenticator, document_security
from app.settings import Settings, get_settings
from app.state import AppState
from app.throttling import worker as throttling_worker
from app.throttling.errors import AuthoringError
from app.throttling.errors import handle as handle_authoring_error
from app.throttling.limiter import ThrottleGate
from app.throttling.router import router as throttling_router
from app.throttling.router import runtime_router as throttling_runtime_router
from app.upstream.breaker import StateListener
from app.upstream.client import PartnerClient

logger = logging.getLogger("sluice")

DESCRIPTION = """
Sluice sits between your applications and the partner APIs you integrate with.

Authenticate with an API key in `X-API-Key` (or `Authorization: Bearer <key>`).
Errors are `application/problem+json` with a stable `code` and the `request_id`.
"""


def _breaker_notifier(notifier: Notifier) -> StateListener:
    def on_change(name: str, old: str, new: str) -> None:
        notifier.notify(
            ErrorEvent(
                code=f"breaker_{new}",  # one code per state: each has its own dedup fingerprint
                status=503 if new == "open" else 0,
                title=f"Circuit breaker {name}: {old} -> {new}",
                detail=f"Calls to {name} are {'paused' if new == 'open' else 'resumed' if new == 'closed' else 'on trial'}",
                upstream=name,
            )
        )

    return on_change


def _start_loops(state: AppState, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    # The comm-log writer owns the buffer, so it runs even on an HTTP-only replica.
    tasks = [asyncio.create_task(state.commlog.run(stop), name="commlog-writer")]
    # Every replica enforces the deployed throttling rules, so every replica follows them.
    tasks.append(asyncio.create_task(state.throttle.run(stop), name="throttling-rules"))
    if state.settings.run_workers:
        tasks.append(asyncio.create_task(commlog_worker.run_purge(state, stop), name="commlog-purge"))
        tasks.append(asyncio.create_task(airlock_worker.run(state, stop), name="airlock-delivery"))
        tasks.append(asyncio.create_task(airlock_worker.run_cleanup(state, stop), name="airlock-cleanup"))
        tasks.append(
            asyncio.create_task(throttling_worker.run_maintenance(state, stop), name="throttling-maintenance")
        )
        tasks.append(
            asyncio.create_task(
                directory_service.run_health_loop(state.settings, state.sessionmaker, stop),
                name="directory-health",
            )
        )
        if state.order_sync.enabled:
            tasks.append(asyncio.create_task(state.order_sync.run(stop), name="order-sync"))
    return tasks


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    provider = app.state.tracer_provider
    tracer = provider.get_tracer("sluice") if provider is not None else trace.NoOpTracer()
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    redis = create_redis(settings)
    notifier = Notifier(settings)
    await notifier.start()
    partner = PartnerClient(
        "partner",
        settings=settings,
        redis=redis,
        tracer=tracer,
        base_url=settings.effective_partner_base_url,
        on_breaker_change=_breaker_notifier(notifier),
    )
    throttle = ThrottleGate(settings, redis, sessionmaker)
    partner.throttle = throttle
    state = AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        redis=redis,
        tracer=tracer,
        tracer_provider=provider,
        authenticator=Authenticator(settings, sessionmaker),
        notifier=notifier,
        commlog=CommLogWriter(settings, engine),
        partner=partner,
        url_policy=UrlPolicy(settings),
        throttle=throttle,
        order_sync=OrderSync(settings, sessionmaker, redis),
        app=app,
    )
    app.state.sluice = state
    if not getattr(app.state, "admin_mounted", False):
        from app.admin.setup import mount_admin

        mount_admin(app, state)
        app.state.admin_mounted = True
    try:
        await throttle.reload()
    except Exception as exc:
        # Not fatal: the rules loop keeps trying; until then no configuration is enforced.
        logger.error("could not load the throttling configurations at start-up: %r", exc)
    stop = asyncio.Event()
    tasks = _start_loops(state, stop)
    if settings.gc_freeze:
        # Everything built at start-up lives as long as the process: move it out of the
        # collector's sight so that collections scan only per-request garbage (p99 latency).
        gc.collect()
        gc.freeze()
    logger.info("sluice %s started (instance %s)", __version__, settings.instance_name)
    try:
        yield
    finally:
        stop.set()
        state.commlog.stop_waiting()
        # The delivery loop gives running calls airlock_shutdown_grace seconds, then releases them.
        done, pending = await asyncio.wait(tasks, timeout=settings.airlock_shutdown_grace + 10)
        for task in pending:
            task.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error("background loop %s ended with %r", task.get_name(), task.exception())
        await airlock_alerts.drain()
        await partner.aclose()
        await state.order_sync.aclose()
        await notifier.stop()
        with contextlib.suppress(Exception):
            await redis.aclose()
        await engine.dispose()
        if provider is not None:
            provider.shutdown()
        logger.info("sluice stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    setup_logging(settings)
    app = FastAPI(
        title="Sluice",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tracer_provider = setup_tracing(settings)
    install_error_handlers(app)
    app.add_exception_handler(AuthoringError, handle_authoring_error)
    document_security(app)
    app.include_router(health_router)
    app.include_router(partner_router)
    app.include_router(commlog_router)
    app.include_router(airlock_router)
    app.include_router(throttling_router, prefix=settings.throttling_base_path.rstrip("/"))
    app.include_router(throttling_runtime_router)
    app.include_router(orders_router)
    app.include_router(sync_router)
    app.include_router(directory_router)
    if settings.mount_sandbox:
        from app.sandbox import create_sandbox_app

        app.mount(
            "/sandbox",
            create_sandbox_app(
                client_id=settings.partner_client_id,
                client_secret=settings.partner_client_secret.get_secret_value(),
                token_ttl=settings.sandbox_token_ttl,
            ),
        )
    provider = app.state.tracer_provider
    lean_tracing = provider is not None and settings.tracing_server_spans == "sluice"
    app.add_middleware(
        RequestContextMiddleware,
        access_log=True,
        tracer=provider.get_tracer("sluice.http") if lean_tracing else None,
    )
    if provider is not None and not lean_tracing:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=provider,
            excluded_urls="/health/,/metrics,/sandbox/,/admin/",
            exclude_spans=["receive", "send"],
        )
    return app
