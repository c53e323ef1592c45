"""Gateway operations: each maps one /v1 call onto one partner call (seed 000, node H)."""

from __future__ import annotations

from typing import Any

from app.partner.dependencies import CallerContext
from app.partner.schemas import InquiryRequest, ProductQuery, PurchaseRequest
from app.upstream.client import UpstreamResponse


def _meta(response: UpstreamResponse, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"upstream_status": response.status}
    process_time = response.header.get("process_time")
    if process_time is not None:
        meta["partner_process_time"] = process_time
    meta.update(extra)
    return meta


async def list_products(caller: CallerContext, query: ProductQuery) -> tuple[Any, dict[str, Any]]:
    """The partner's product list, filtered and paginated as asked."""
    params = query.model_dump(exclude_none=True)
    response = await caller.partner.request(
        "GET", "/v2/product-list", endpoint="product-list", params=params, headers=caller.partner_headers()
    )
    count = len(response.data) if isinstance(response.data, list) else None
    return response.data, _meta(response, page=query.page, per_page=query.per_page, count=count)


async def check_bill(caller: CallerContext, inquiry: InquiryRequest) -> tuple[Any, dict[str, Any]]:
    """Ask the partner whether a bill is payable (inquiry)."""
    response = await caller.partner.request(
        "POST", "/v2/inquiry", endpoint="inquiry", json=inquiry.model_dump(), headers=caller.partner_headers()
    )
    return response.data, _meta(response)


async def create_purchase(caller: CallerContext, purchase: PurchaseRequest) -> tuple[Any, dict[str, Any]]:
    """Place an order at the partner."""
    response = await caller.partner.request(
        "POST",
        "/v2/order",
        endpoint="order",
        json=purchase.model_dump(exclude_none=True),
        headers=caller.partner_headers(),
    )
    return response.data, _meta(response)


async def get_purchase(caller: CallerContext, purchase_id: str) -> tuple[Any, dict[str, Any]]:
    """The partner's view of an order."""
    response = await caller.partner.request(
        "GET", f"/v2/order/{purchase_id}", endpoint="order-detail", headers=caller.partner_headers()
    )
    return response.data, _meta(response)
