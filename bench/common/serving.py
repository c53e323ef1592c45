"""The child side of a benchmark: an event loop run to its end, and the fake servers' `main()`.

A fake server (`python -m bench.<bench>.<server> --port N`) is an aiohttp.web application that
serves until SIGTERM or SIGINT, with `GET /_bench/health` for readiness and `GET /_bench/stats` for
its counters (`add_bench_routes`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from bench.common.processes import HEALTH_PATH


def run_event_loop(main: Coroutine[Any, Any, Any]) -> None:
    """asyncio.run on uvloop when it is installed; Ctrl-C ends it without a traceback."""
    try:
        import uvloop
    except ImportError:
        run: Callable[[Any], Any] = asyncio.run
    else:
        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(main)


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_app(app: web.Application, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or SIGINT."""
    run_event_loop(_serve(app, host, port))


def add_bench_routes(app: web.Application, stats: Callable[[], dict[str, Any]]) -> None:
    """`GET /_bench/stats` (what `stats()` returns, as JSON) and `GET /_bench/health`."""

    async def stats_handler(request: web.Request) -> web.Response:
        return web.json_response(stats())

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/_bench/stats", stats_handler)
    app.router.add_get(HEALTH_PATH, health)


def fake_server_main(make_app: Callable[[], web.Application], description: str | None) -> None:
    """`--host` (default 127.0.0.1) and `--port`, then serve `make_app()` there."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_app(make_app(), args.host, args.port)
