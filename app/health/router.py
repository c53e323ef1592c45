from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.security import require_scopes
from app.state import AppState

router = APIRouter(tags=["health"])
_CHECK_TIMEOUT = 2.0


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "ok"}


async def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check, timeout=_CHECK_TIMEOUT)
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@router.get("/health/ready", summary="Database and Redis reachable; breaker states")
async def ready(request: Request) -> Response:
    state: AppState = request.app.state.sluice

    async def database() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    db_check, redis_check = await asyncio.gather(_timed(database()), _timed(state.redis.ping()))
    breakers = {state.partner.name: state.partner.breaker.state}
    ok = db_check["ok"] and redis_check["ok"]
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": {"database": db_check, "redis": redis_check},
        "breakers": breakers,
        "commlog_pending": state.commlog.pending,
    }
    return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(require_scopes("metrics"))])
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
