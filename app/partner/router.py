"""HTTP only: validation and shaping; the work is in service.py."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Response

from app.observability import current_request_id
from app.partner import service
from app.partner.dependencies import CallerDep, ProductQueryDep, query_parameters, require_json_body
from app.partner.handler import GatewayRoute
from app.partner.schemas import Envelope, InquiryRequest, ProductQuery, PurchaseRequest
from app.security import require_scopes

router = APIRouter(
    prefix="/v1",
    tags=["partner gateway"],
    route_class=GatewayRoute,
    dependencies=[Depends(require_scopes("partner"))],
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Missing or invalid header, invalid JSON"},
    401: {"description": "Missing or invalid API key"},
    403: {"description": "Scope missing, or the partner refused (partner_forbidden)"},
    409: {"description": "Product closed (product_closed)"},
    415: {"description": "Body not sent as application/json"},
    422: {"description": "Invalid parameters, or bill not valid (bill_not_valid)"},
    502: {"description": "partner_error, partner_auth_failed, partner_unreachable"},
    503: {"description": "circuit_open (see Retry-After)"},
    504: {"description": "partner_timeout"},
}


def _envelope(data: Any, meta: dict[str, Any], status: int = 200) -> Response:
    meta["request_id"] = current_request_id()
    return Response(
        orjson.dumps({"data": data, "meta": meta}), status_code=status, media_type="application/json"
    )


@router.get(
    "/products",
    response_model=Envelope,
    responses=_ERRORS,
    summary="List the partner's products",
    openapi_extra=query_parameters(ProductQuery),
)
async def list_products(caller: CallerDep, query: ProductQueryDep) -> Response:
    data, meta = await service.list_products(caller, query)
    return _envelope(data, meta)


@router.post(
    "/inquiries",
    response_model=Envelope,
    responses=_ERRORS,
    dependencies=[Depends(require_json_body)],
    summary="Check a bill (partner inquiry)",
)
async def create_inquiry(caller: CallerDep, inquiry: InquiryRequest) -> Response:
    data, meta = await service.check_bill(caller, inquiry)
    return _envelope(data, meta)


@router.post(
    "/purchases",
    response_model=Envelope,
    status_code=201,
    responses=_ERRORS,
    dependencies=[Depends(require_json_body)],
    summary="Buy a product (partner order)",
)
async def create_purchase(caller: CallerDep, purchase: PurchaseRequest) -> Response:
    data, meta = await service.create_purchase(caller, purchase)
    return _envelope(data, meta, status=201)


@router.get("/purchases/{purchase_id}", response_model=Envelope, responses=_ERRORS, summary="Get a purchase")
async def get_purchase(
    caller: CallerDep,
    purchase_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")],
) -> Response:
    data, meta = await service.get_purchase(caller, purchase_id)
    return _envelope(data, meta)
