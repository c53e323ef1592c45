"""The fake partner of the throttling bench: it answers fast and notes when each call arrived.

    python -m bench.throttle.upstream --port 9001

- `POST /oauth/token`: client credentials (anything is accepted); a fresh bearer token valid
  3600 s, counted.
- `GET /v2/product-list`: the gateway bench's pre-encoded partner envelope. Its arrival time
  (`time.time()`, on entry to the handler) is appended to an in-memory array.
- `POST /_bench/arrivals`: the arrival times noted since the last take, as raw little-endian
  float64 (`array("d")`), and forgets them. Also used to clear the array before a phase.
- `GET /_bench/stats`: tokens issued and product-list calls so far.
- `GET /_bench/health`: readiness.

The arrival is stamped in the handler, after aiohttp parsed the request: what the partner sees,
give or take the parsing (~20 µs here), which only adds jitter, never bunches calls.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from array import array

from aiohttp import web

from bench.airlock.serve import run_app
from bench.gateway.upstream import JSON, PRODUCT_LIST


def make_app() -> web.Application:
    arrivals = array("d")
    counts = {"tokens": 0, "product_requests": 0}
    now = time.time

    async def token(request: web.Request) -> web.Response:
        await request.read()
        counts["tokens"] += 1
        body = json.dumps(
            {"access_token": secrets.token_urlsafe(24), "token_type": "Bearer", "expires_in": 3600}
        )
        return web.Response(body=body.encode(), content_type=JSON)

    async def product_list(request: web.Request) -> web.Response:
        arrivals.append(now())
        counts["product_requests"] += 1
        return web.Response(body=PRODUCT_LIST, content_type=JSON)

    async def take(request: web.Request) -> web.Response:
        if sys.byteorder != "little":
            arrivals.byteswap()
        body = arrivals.tobytes()
        del arrivals[:]
        return web.Response(body=body, content_type="application/octet-stream")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/product-list", product_list)
    app.router.add_post("/_bench/arrivals", take)
    app.router.add_get("/_bench/stats", stats)
    app.router.add_get("/_bench/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run_app(make_app(), args.host, args.port)


if __name__ == "__main__":
    main()
