"""The fake partner of bench/gateway, plus the order endpoint a stored purchase replays.

    python -m bench.airlock.upstream --port 9001

On top of `bench.gateway.upstream` (`POST /oauth/token`, `GET /v2/product-list`, its stats):

- `POST /v2/order`: the partner envelope around an order echoing the request's `ref_id`,
  `product_code` and `customer_number` (status 200). Orders sent without a bearer token issued
  here are answered all the same but counted as `unauthenticated`.
- `GET /_bench/order-stats`: tokens issued, orders, distinct `ref_id`s, unauthenticated orders.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from bench.common.serving import fake_server_main
from bench.gateway.upstream import JSON
from bench.gateway.upstream import make_app as gateway_app

TOKEN_PATH = "/oauth/token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app() -> web.Application:
    app = gateway_app()
    issued: set[str] = set()
    ref_ids: set[str] = set()
    counts = {"tokens": 0, "orders": 0, "unauthenticated": 0}
    order_ids = itertools.count(1)

    @web.middleware
    async def track_tokens(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The gateway upstream issues the tokens; remember them to check the orders' bearer.
        response = await handler(request)
        if request.path == TOKEN_PATH and isinstance(response, web.Response) and response.status == 200:
            assert isinstance(response.body, bytes)
            issued.add(json.loads(response.body)["access_token"])
            counts["tokens"] += 1
        return response

    async def order(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = json.loads(await request.read())
        counts["orders"] += 1
        ref_id = body.get("ref_id")
        if ref_id is not None:
            ref_ids.add(ref_id)
        auth = request.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:] in issued):
            counts["unauthenticated"] += 1
        data = {
            "order_id": f"ORD-{next(order_ids):08d}",
            "ref_id": ref_id,
            "product_code": body.get("product_code"),
            "customer_number": body.get("customer_number"),
            "status": "success",
            "amount": 50000,
            "created_at": "2026-01-01T00:00:00+00:00",
        }
        header = {
            "process_time": round(time.perf_counter() - started, 6),
            "messages": "success",
            "reason": "",
            "error_code": "",
        }
        return web.Response(
            body=json.dumps({"header": header, "data": data}, separators=(",", ":")).encode(),
            content_type=JSON,
        )

    async def order_stats(request: web.Request) -> web.Response:
        return web.json_response({**counts, "distinct_ref_ids": len(ref_ids)})

    app.middlewares.append(track_tokens)
    app.router.add_post("/v2/order", order)
    app.router.add_get("/_bench/order-stats", order_stats)
    return app


if __name__ == "__main__":
    fake_server_main(make_app, __doc__)
