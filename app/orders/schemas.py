"""Request and response bodies of the Orders API."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from app.db import STORABLE_TEXT
from app.orders.models import Order, OrderStatus
from app.orders.sync_states import SyncState

# ISO 4217 codes in use (2026), less funds and precious metals.
CURRENCIES = frozenset(
    """AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF
    KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN
    MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD
    SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
    UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG""".split()
)

Text200 = Annotated[str, Field(min_length=1, max_length=200, pattern=STORABLE_TEXT)]


def _known_currency(value: str) -> str:
    code = value.upper()
    if code not in CURRENCIES:
        raise ValueError(f"unknown currency {value!r} (ISO 4217 code expected)")
    return code


Currency = Annotated[
    str,
    Field(
        min_length=3,
        max_length=3,
        description="an ISO 4217 code in use (case-insensitive)",
        json_schema_extra={"enum": sorted(CURRENCIES)},
    ),
    AfterValidator(_known_currency),
]


# The total is stored as NUMERIC(18, 4): below 10^14.
MAX_TOTAL = Decimal(10) ** 14


def _lines_total(lines: list[OrderLine]) -> Decimal:
    return sum((line.unit_price * line.quantity for line in lines), Decimal(0))


def _check_total(lines: list[OrderLine]) -> None:
    if _lines_total(lines) >= MAX_TOTAL:
        raise ValueError(
            f"the order's total (quantity × unit_price over its lines) must be below {MAX_TOTAL:,}"
        )


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, Field(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
    name: Text200
    quantity: Annotated[int, Field(gt=0, le=1_000_000)]
    unit_price: Annotated[Decimal, Field(ge=0, le=Decimal("1e12"), max_digits=18, decimal_places=4)]

    @field_validator("unit_price")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("unit_price must be a number")
        return value


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text200
    email: EmailStr


class OrderIn(BaseModel):
    """An order as a client writes it (POST, PUT). `id` may be chosen by the client (idempotent
    creation); `number` defaults to one derived from the id."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID | None = None
    number: Annotated[str | None, Field(min_length=1, max_length=64, pattern=STORABLE_TEXT)] = None
    customer: Customer
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=500)]
    currency: Currency
    status: OrderStatus = OrderStatus.NEW
    notes: Annotated[str, Field(max_length=10_000, pattern=STORABLE_TEXT)] = ""

    @model_validator(mode="after")
    def _total_fits(self) -> OrderIn:
        _check_total(self.lines)
        return self

    def total(self) -> Decimal:
        return _lines_total(self.lines)

    def stored_lines(self) -> list[dict[str, Any]]:
        return [{**line.model_dump(), "unit_price": str(line.unit_price)} for line in self.lines]


class OrderOut(BaseModel):
    id: uuid.UUID
    number: str
    customer: Customer
    lines: list[dict[str, Any]]
    currency: str
    total: str
    status: str
    notes: str
    created_at: datetime
    updated_at: datetime
    version: int
    origin: str
    deleted: bool
    sync_state: str
    change_seq: int | None
    changed_by: str

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            id=order.id,
            number=order.number,
            customer=Customer.model_construct(name=order.customer_name, email=order.customer_email),
            lines=order.lines,
            currency=order.currency,
            total=format_money(order.total),
            status=order.status,
            notes=order.notes,
            created_at=order.created_at,
            updated_at=order.updated_at,
            version=order.version,
            origin=order.origin,
            deleted=order.deleted,
            sync_state=SyncState(order.sync_state).name,
            change_seq=order.change_seq,
            changed_by=order.changed_by,
        )


def format_money(value: Decimal) -> str:
    """Decimal as a plain string with at least two decimals ("12.50", "0.125")."""
    text = format(value.normalize(), "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


class OrderPage(BaseModel):
    items: list[OrderOut]
    # List mode: the cursor of the next page. Change feed (`since`): the cursor to read from next.
    next_cursor: str | None = None
    next_since: int | None = None
    # Change feed: the feed's last position (next_since == head: nothing more to read now).
    head: int | None = None


class Replica(BaseModel):
    """An order as one instance sends it to the other: the content plus what sync needs."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    number: Annotated[str, Field(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
    customer: Customer
    lines: Annotated[list[OrderLine], Field(min_length=1, max_length=500)]
    currency: Currency
    status: OrderStatus
    notes: Annotated[str, Field(max_length=10_000, pattern=STORABLE_TEXT)] = ""
    created_at: datetime
    updated_at: datetime
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]  # an INTEGER column
    origin: Annotated[str, Field(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
    deleted: bool = False
    changed_by: Annotated[str, Field(min_length=1, max_length=64, pattern=STORABLE_TEXT)]
    # The sender's sync state of the record (ST_NEW, ST_UPD, ST_DEL, ST_ERROR).
    sync_state: str
    # A resolved collision: the receiver, in collision too, takes this copy.
    resolution: bool = False
    sync_error: str | None = None

    @model_validator(mode="after")
    def _total_fits(self) -> Replica:
        _check_total(self.lines)
        return self

    @field_validator("sync_state")
    @classmethod
    def _known_state(cls, value: str) -> str:
        if value not in SyncState.__members__:
            raise ValueError(f"unknown sync state {value!r}")
        return value

    def as_order_in(self) -> OrderIn:
        # Every field was validated as OrderIn's are (same types): no second validation.
        return OrderIn.model_construct(
            number=self.number,
            customer=self.customer,
            lines=self.lines,
            currency=self.currency,
            status=self.status,
            notes=self.notes,
        )


class SyncAnswer(BaseModel):
    """What the receiver of a replica answers: its state for the record afterwards, the version
    it now holds from the sender (None: not taken, e.g. a collision), and its own copy when the
    two are in collision."""

    state: str
    ack_version: int | None
    order: OrderOut | None
    # In a batch answer: why this replica was refused (not valid here); nothing was applied.
    error: str | None = None


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    take: Literal["local", "remote", "merged"]
    # For "merged": the order as it should be.
    order: OrderIn | None = None
