"""The sandbox partner's state: config, issued tokens, counters, orders and the product catalogue.

Everything lives on one `SandboxState` per app instance (never module globals), so two sandbox
apps in one process (the mounted one and a test's own) never see each other's tokens or counters.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

# Orders are kept only so GET /v2/order/{id} can find them; a load test creates many, so the
# oldest are forgotten past this bound instead of growing the process without limit.
MAX_ORDERS = 100_000
RECENT_REQUESTS = 50
MAX_ARRIVALS = 200_000
# The amount of a product the catalogue does not list (trigger values used as product codes).
DEFAULT_AMOUNT = 10_000
ADMIN_FEE = 2_500


def _catalogue() -> list[dict[str, Any]]:
    products: list[dict[str, Any]] = []

    def add(code: str, name: str, category_id: int, operator_id: int, price: int) -> None:
        products.append(
            {
                "product_code": code,
                "name": name,
                "category_id": category_id,
                "operator_id": operator_id,
                "price": price,
                "status": "active",
            }
        )

    # Category 1: mobile credit, 4 operators x 4 denominations.
    for operator_id, (prefix, operator) in enumerate(
        [("TSEL", "Telkomsel"), ("ISAT", "Indosat"), ("XL", "XL"), ("TRI", "Tri")], start=1
    ):
        for denomination in (10, 25, 50, 100):
            add(
                f"{prefix}{denomination}",
                f"{operator} Pulsa {denomination}.000",
                1,
                operator_id,
                denomination * 1000 + 1500,
            )
    # Category 2: data packages.
    for operator_id, prefix, operator in ((1, "TSEL", "Telkomsel"), (2, "ISAT", "Indosat"), (3, "XL", "XL")):
        for gigabytes, price in ((5, 55_000), (15, 110_000)):
            add(f"{prefix}D{gigabytes}", f"{operator} Data {gigabytes} GB 30 hari", 2, operator_id, price)
    # Category 3: PLN prepaid electricity tokens (operator 5).
    for denomination in (20, 50, 100, 200):
        add(f"PLN{denomination}", f"Token PLN {denomination}.000", 3, 5, denomination * 1000 + 2000)
    # Category 4: game vouchers (operator 6).
    for code, name, price in (
        ("GAME-ML86", "Mobile Legends 86 Diamonds", 24_000),
        ("GAME-FF100", "Free Fire 100 Diamonds", 16_000),
        ("GAME-STEAM60", "Steam Wallet 60.000", 62_000),
        ("GAME-GPLAY50", "Google Play 50.000", 51_000),
    ):
        add(code, name, 4, 6, price)
    return products


CATALOGUE: tuple[dict[str, Any], ...] = tuple(_catalogue())
PRODUCTS: dict[str, dict[str, Any]] = {p["product_code"]: p for p in CATALOGUE}


def find_product(code: str) -> dict[str, Any] | None:
    """A catalogue product; trigger values (TRIGGER-...) stand for a synthetic product of 10000."""
    product = PRODUCTS.get(code)
    if product is None and code.startswith("TRIGGER-"):
        return {
            "product_code": code,
            "name": "Sandbox trigger product",
            "category_id": 0,
            "operator_id": 0,
            "price": DEFAULT_AMOUNT,
            "status": "active",
        }
    return product


def list_products(category_id: int | None, operator_id: int | None, code: str | None) -> list[dict[str, Any]]:
    candidates = CATALOGUE if not code else [p for p in (find_product(code),) if p is not None]
    return [
        p
        for p in candidates
        if (category_id is None or p["category_id"] == category_id)
        and (operator_id is None or p["operator_id"] == operator_id)
    ]


def make_order(order_id: str, ref_id: str | None, product: dict[str, Any], customer: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "ref_id": ref_id,
        "product_code": product.get("product_code", order_id),
        "customer_number": customer,
        "status": "success",
        "amount": product.get("price", DEFAULT_AMOUNT),
        "created_at": datetime.now(UTC).isoformat(),
    }


@dataclass(slots=True)
class SandboxConfig:
    token_ttl: int = 3600
    latency_ms: int = 0
    fail_next: int = 0
    fail_status: int = 503
    token_delay_ms: int = 0
    # Not in the original brief but cheap: makes token-endpoint failures testable too.
    token_fail_next: int = 0
    token_fail_status: int = 503

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def update(self, values: dict[str, Any]) -> str | None:
        """Apply `values`; the name of the first invalid field (nothing applied), else None."""
        known = {f.name for f in fields(self)}
        for name, value in values.items():
            if name not in known or isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return name
            if name.endswith("fail_status") and not 400 <= value <= 599:
                return name
            if name == "token_ttl" and value < 1:
                return name
        for name, value in values.items():
            setattr(self, name, value)
        return None


@dataclass(slots=True)
class SandboxState:
    client_id: str
    client_secret: str
    default_token_ttl: int
    config: SandboxConfig = field(init=False)
    # token -> time.monotonic() deadline.
    tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    unauthorized: int = 0
    last_request: dict[str, Any] | None = None
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    orders: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    # When each partner call arrived (Unix time) per route, so tests and benchmarks can check
    # the rate Sluice sends at (throttling). Bounded: the newest MAX_ARRIVALS are kept.
    arrivals: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = SandboxConfig(token_ttl=self.default_token_ttl)

    def reset(self) -> None:
        self.config = SandboxConfig(token_ttl=self.default_token_ttl)
        self.tokens.clear()
        self.tokens_issued = 0
        self.requests.clear()
        self.unauthorized = 0
        self.last_request = None
        self.recent.clear()
        self.orders.clear()
        self.arrivals.clear()

    def count(self, route: str) -> None:
        self.requests[route] = self.requests.get(route, 0) + 1
        times = self.arrivals.get(route)
        if times is None:
            times = self.arrivals[route] = deque(maxlen=MAX_ARRIVALS)
        times.append(time.time())

    def issue_token(self) -> tuple[str, int]:
        now = time.monotonic()
        # Pruning on issue keeps the dict bounded by the tokens alive at once.
        expired = [t for t, deadline in self.tokens.items() if deadline <= now]
        for token in expired:
            del self.tokens[token]
        ttl = self.config.token_ttl
        token = secrets.token_urlsafe(24)
        self.tokens[token] = now + ttl
        self.tokens_issued += 1
        return token, ttl

    def token_valid(self, token: str) -> bool:
        deadline = self.tokens.get(token)
        return deadline is not None and time.monotonic() < deadline

    def revoke_tokens(self) -> int:
        now = time.monotonic()
        alive = sum(1 for deadline in self.tokens.values() if deadline > now)
        self.tokens.clear()
        return alive

    def store_order(self, order: dict[str, Any]) -> None:
        self.orders[order["order_id"]] = order
        if len(self.orders) > MAX_ORDERS:
            self.orders.popitem(last=False)

    def remember(self, request: dict[str, Any]) -> None:
        self.last_request = request
        self.recent.append(request)

    def stats(self) -> dict[str, Any]:
        return {
            "tokens_issued": self.tokens_issued,
            "requests": dict(self.requests),
            "unauthorized": self.unauthorized,
            "last_request": self.last_request,
            "recent_requests": list(self.recent),
            "orders": len(self.orders),
            "config": self.config.as_dict(),
        }
