from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")]
CustomerNumber = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._\-]+$")]


class ProductQuery(BaseModel):
    """Filters of GET /v1/products, passed on to the partner's /v2/product-list."""

    model_config = ConfigDict(extra="forbid")

    category_id: int | None = Field(default=None, ge=1, description="Partner category id")
    operator_id: int | None = Field(default=None, ge=1, description="Partner operator id")
    product_code: Code | None = None
    page: int = Field(default=1, ge=1, le=10_000)
    per_page: int = Field(default=20, ge=1, le=100)


class InquiryRequest(BaseModel):
    """A bill check: does this customer number have a payable bill for this product?"""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"product_code": "PLN50", "customer_number": "0812345678"}},
    )

    product_code: Code
    customer_number: CustomerNumber


class PurchaseRequest(BaseModel):
    """An order for a digital product."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"product_code": "PLN50", "customer_number": "0812345678", "ref_id": "inv-2026-0001"}
        },
    )

    product_code: Code
    customer_number: CustomerNumber
    ref_id: Code | None = Field(default=None, description="Your reference for this purchase")


class Envelope(BaseModel):
    """Every successful gateway answer: the partner's data and Sluice's metadata."""

    data: Any
    meta: dict[str, Any]
