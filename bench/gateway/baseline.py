"""The baseline: a bare FastAPI endpoint that forwards to the upstream, and nothing else.

One route, `GET /v1/products`, forwards to `<upstream>/v2/product-list` (query string passed on)
through ONE `aiohttp.ClientSession` made in the lifespan, and returns the upstream's body bytes
as they are. No auth, no token, no logging, no tracing: the floor a gateway is measured against.

    BENCH_UPSTREAM_URL=http://127.0.0.1:9001 uvicorn bench.gateway.baseline:app --port 9002
    python -m bench.gateway.baseline --upstream http://127.0.0.1:9001 --port 9002
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request, Response

UPSTREAM_ENV = "BENCH_UPSTREAM_URL"


def create_app(upstream_url: str | None = None) -> FastAPI:
    base = (upstream_url or os.environ.get(UPSTREAM_ENV) or "http://127.0.0.1:9001").rstrip("/")
    target = f"{base}/v2/product-list"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=10)
        ) as session:
            app.state.session = session
            yield

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/products")
    async def products(request: Request) -> Response:
        query = request.url.query
        url = f"{target}?{query}" if query else target
        async with request.app.state.session.get(url) as upstream:
            body = await upstream.read()
            return Response(content=body, status_code=upstream.status, media_type="application/json")

    return app


app = create_app()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", default=None, help=f"upstream base URL (default: ${UPSTREAM_ENV})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream),
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
