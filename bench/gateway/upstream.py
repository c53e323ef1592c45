"""A fast fake partner: the two endpoints Sluice calls for `GET /v1/products`.

    python -m bench.gateway.upstream --port 9001

- `POST /oauth/token`: client credentials (anything is accepted); answers a fresh random
  bearer token valid 3600 s, and counts it.
- `GET /v2/product-list`: the partner envelope with ten small products, pre-encoded once.
  Requests without a bearer token issued here are answered all the same (the bare baseline
  sends none) but counted as `unauthenticated`.
- `GET /_bench/stats`: the counters, as JSON (read by the benchmark between phases).
- `GET /_bench/health`: readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal

from aiohttp import web

PRODUCTS = [
    {
        "product_id": f"P-{1000 + i}",
        "sku": f"SKU-{i:05d}",
        "name": f"Bench product {i}",
        "category": ("tools", "garden", "kitchen", "office")[i % 4],
        "price": round(9.99 + i * 3.5, 2),
        "currency": "EUR",
        "stock": 10 * i + 3,
        "active": True,
        "updated_at": "2024-06-01T12:00:00Z",
    }
    for i in range(10)
]

PRODUCT_LIST = json.dumps(
    {
        "header": {"process_time": 0.001, "messages": "success", "reason": "", "error_code": ""},
        "data": PRODUCTS,
    },
    separators=(",", ":"),
).encode()

JSON = "application/json"


class Counters:
    def __init__(self) -> None:
        self.tokens = 0
        self.product_requests = 0
        self.unauthenticated = 0
        self.issued: set[str] = set()

    def as_dict(self) -> dict[str, int]:
        return {
            "tokens": self.tokens,
            "product_requests": self.product_requests,
            "unauthenticated": self.unauthenticated,
        }


def make_app() -> web.Application:
    counters = Counters()

    async def token(request: web.Request) -> web.Response:
        await request.read()  # form body: grant_type=client_credentials; credentials not checked
        value = secrets.token_urlsafe(24)
        counters.issued.add(value)
        counters.tokens += 1
        body = json.dumps({"access_token": value, "token_type": "Bearer", "expires_in": 3600})
        return web.Response(body=body.encode(), content_type=JSON)

    async def product_list(request: web.Request) -> web.Response:
        counters.product_requests += 1
        auth = request.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:] in counters.issued):
            counters.unauthenticated += 1
        return web.Response(body=PRODUCT_LIST, content_type=JSON)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counters.as_dict())

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/product-list", product_list)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/health", health)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
