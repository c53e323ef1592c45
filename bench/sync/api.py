"""The HTTP calls the sync benchmark makes to A and B, the orders it writes, and the comparison
of the two instances' copies (read from their change feeds)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.common.processes import BenchError

FEED_PAGE = 500  # the API's largest page (app.orders.service.MAX_PAGE)
CREATE_TRIES = 3
# What must be equal on both sides for an order to count as converged.
COMPARED = (
    "id",
    "number",
    "customer",
    "lines",
    "currency",
    "total",
    "status",
    "notes",
    "version",
    "deleted",
    "changed_by",
)
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "PLN")
PRODUCTS = (("PLN20", "Prepaid 20", "10.25"), ("PLN50", "Prepaid 50", "4.5"), ("DATA5", "Data 5 GB", "7.99"))


def order_bodies(count: int, seed: int) -> list[tuple[uuid.UUID, bytes]]:
    """`count` valid orders with ids chosen here (uuid4 from a seeded generator), varied content."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        order_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        lines = [
            {"sku": sku, "name": name, "quantity": rng.randint(1, 5), "unit_price": price}
            for sku, name, price in rng.sample(PRODUCTS, rng.randint(1, len(PRODUCTS)))
        ]
        body = {
            "id": str(order_id),
            "customer": {"name": f"Customer {i}", "email": f"customer{i}@example.com"},
            "lines": lines,
            "currency": rng.choice(CURRENCIES),
            "notes": f"created on B, #{i}",
        }
        out.append((order_id, orjson.dumps(body)))
    return out


def edit_body(order: dict[str, Any], *, notes: str, status: str) -> bytes:
    """The order as read (feed item) with other notes and status: a PUT body."""
    body = {k: order[k] for k in ("customer", "lines", "currency")}
    return orjson.dumps({**body, "notes": notes, "status": status})


def key(order: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(orjson.dumps(order[k], option=orjson.OPT_SORT_KEYS) for k in COMPARED)


@dataclass
class Comparison:
    """A's and B's orders (all of them, from both feeds) side by side."""

    on_a: int
    on_b: int
    equal: int
    differing: list[str]
    only_on_a: list[str]
    only_on_b: list[str]
    states_a: dict[str, int]
    states_b: dict[str, int]
    lost: list[str] = field(default_factory=list)  # created on B (201/200), missing on A

    def as_dict(self) -> dict[str, Any]:
        return {
            "on_a": self.on_a,
            "on_b": self.on_b,
            "equal": self.equal,
            "differing": len(self.differing),
            "only_on_a": len(self.only_on_a),
            "only_on_b": len(self.only_on_b),
            "lost": len(self.lost),
            "states_a": self.states_a,
            "states_b": self.states_b,
            "examples": {
                "differing": self.differing[:5],
                "only_on_a": self.only_on_a[:5],
                "only_on_b": self.only_on_b[:5],
                "lost": self.lost[:5],
            },
        }


def compare(
    on_a: dict[str, dict[str, Any]], on_b: dict[str, dict[str, Any]], created: set[str]
) -> Comparison:
    both = on_a.keys() & on_b.keys()
    differing = sorted(i for i in both if key(on_a[i]) != key(on_b[i]))
    return Comparison(
        on_a=len(on_a),
        on_b=len(on_b),
        equal=len(both) - len(differing),
        differing=differing,
        only_on_a=sorted(on_a.keys() - on_b.keys()),
        only_on_b=sorted(on_b.keys() - on_a.keys()),
        states_a=dict(Counter(o["sync_state"] for o in on_a.values())),
        states_b=dict(Counter(o["sync_state"] for o in on_b.values())),
        lost=sorted(created - on_a.keys()),
    )


class Api:
    """One instance's API, as the benchmark's client (the bootstrap admin key, all scopes)."""

    def __init__(self, http: aiohttp.ClientSession, name: str, url: str, api_key: str) -> None:
        self.http = http
        self.name = name
        self.url = url
        self.headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.http.request(method, self.url + path, headers=self.headers, **kwargs) as response:
            body = await response.read()
            if response.status != 200:
                raise BenchError(
                    f"{method} {self.name}{path}: HTTP {response.status} {body[:300].decode(errors='replace')}"
                )
            return orjson.loads(body)

    async def status(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/v1/sync/status"))

    async def run_round(self) -> dict[str, Any]:
        """POST /v1/sync/run: one round (pull, then push until nothing is pending), now."""
        return dict(await self._json("POST", "/v1/sync/run"))

    async def create(self, order_id: uuid.UUID, body: bytes) -> int:
        """POST /v1/orders; the status (201, or 200 for a repeat after a lost answer)."""
        last = ""
        for attempt in range(CREATE_TRIES):
            try:
                async with self.http.post(
                    self.url + "/v1/orders", data=body, headers=self.headers
                ) as response:
                    if response.status in (200, 201):
                        await response.release()
                        return response.status
                    last = f"HTTP {response.status} {(await response.read())[:300].decode(errors='replace')}"
                    if response.status < 500:
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.1 * (attempt + 1))
        raise BenchError(f"POST {self.name}/v1/orders ({order_id}): {last}")

    async def put(self, order_id: str, body: bytes, version: int) -> tuple[int, dict[str, Any] | str]:
        headers = {**self.headers, "If-Match": f'"{version}"'}
        async with self.http.put(f"{self.url}/v1/orders/{order_id}", data=body, headers=headers) as response:
            raw = await response.read()
            if response.status == 200:
                return 200, orjson.loads(raw)
            return response.status, raw[:300].decode(errors="replace")

    async def resolve(self, order_id: str, take: str) -> tuple[int, str]:
        async with self.http.post(
            f"{self.url}/v1/orders/{order_id}/resolve",
            data=orjson.dumps({"take": take}),
            headers=self.headers,
        ) as response:
            raw = await response.read()
            return response.status, "" if response.status == 200 else raw[:300].decode(errors="replace")

    async def feed(self, since: int = 0) -> tuple[dict[str, dict[str, Any]], int]:
        """Every order changed after `since` (tombstones included), read page by page from the
        change feed; and the feed's head position."""
        orders: dict[str, dict[str, Any]] = {}
        while True:
            page = await self._json("GET", "/v1/orders", params={"since": since, "limit": FEED_PAGE})
            for order in page["items"]:
                orders[order["id"]] = order
            if not page["items"]:
                return orders, since
            since = int(page["next_since"])
