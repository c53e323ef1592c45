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

import sys
import time
from array import array

from aiohttp import web

from bench.common.serving import add_bench_routes, fake_server_main
from bench.gateway.upstream import JSON, PRODUCT_LIST, issue_token


def make_app() -> web.Application:
    arrivals = array("d")
    counts = {"tokens": 0, "product_requests": 0}
    now = time.time

    async def token(request: web.Request) -> web.Response:
        await request.read()
        counts["tokens"] += 1
        _, response = issue_token()
        return response

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

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/product-list", product_list)
    app.router.add_post("/_bench/arrivals", take)
    add_bench_routes(app, lambda: counts)
    return app


if __name__ == "__main__":
    fake_server_main(make_app, __doc__)
