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

import json
import secrets

from aiohttp import web

from bench.common.serving import add_bench_routes, fake_server_main

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


def issue_token() -> tuple[str, web.Response]:
    """A fresh random bearer token valid 3600 s, and the partner's answer that carries it."""
    value = secrets.token_urlsafe(24)
    body = json.dumps({"access_token": value, "token_type": "Bearer", "expires_in": 3600})
    return value, web.Response(body=body.encode(), content_type=JSON)


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
        value, response = issue_token()
        counters.issued.add(value)
        counters.tokens += 1
        return response

    async def product_list(request: web.Request) -> web.Response:
        counters.product_requests += 1
        auth = request.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:] in counters.issued):
            counters.unauthenticated += 1
        return web.Response(body=PRODUCT_LIST, content_type=JSON)

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/v2/product-list", product_list)
    add_bench_routes(app, counters.as_dict)
    return app


if __name__ == "__main__":
    fake_server_main(make_app, __doc__)
