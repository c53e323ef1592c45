"""Bodies of the directory API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from app.db import STORABLE_TEXT

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,199}$"
ServiceName = Annotated[str, Field(pattern=NAME_PATTERN, description='like "neorezo-billing_invoice-eshop"')]
Tag = Annotated[str, Field(min_length=1, max_length=50, pattern=STORABLE_TEXT)]


class ServiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ServiceName
    base_url: AnyHttpUrl
    stage: Annotated[str, Field(min_length=1, max_length=50, pattern=STORABLE_TEXT)] = "prod"
    description: Annotated[str, Field(max_length=5000, pattern=STORABLE_TEXT)] = ""
    tags: Annotated[list[Tag], Field(max_length=50)] = []
    health_url: AnyHttpUrl | None = None
    # Write-only: stored encrypted, shown only to clients with the directory_credentials scope.
    credentials: Annotated[str | None, Field(max_length=10_000)] = None


class ServiceUpdate(BaseModel):
    """PUT: every field but the name; credentials left out are kept, "" removes them."""

    model_config = ConfigDict(extra="forbid")

    base_url: AnyHttpUrl
    stage: Annotated[str, Field(min_length=1, max_length=50, pattern=STORABLE_TEXT)] = "prod"
    description: Annotated[str, Field(max_length=5000, pattern=STORABLE_TEXT)] = ""
    tags: Annotated[list[Tag], Field(max_length=50)] = []
    health_url: AnyHttpUrl | None = None
    credentials: Annotated[str | None, Field(max_length=10_000)] = None


class ServiceOut(BaseModel):
    name: str
    base_url: str
    stage: str
    description: str
    tags: list[str]
    health_url: str | None
    has_credentials: bool
    # Present only for clients with the directory_credentials scope.
    credentials: str | None = None
    health_status: str
    last_checked_at: datetime | None
    last_seen_at: datetime | None
    last_health_error: str | None
    created_at: datetime
    updated_at: datetime


class ServiceList(BaseModel):
    items: list[ServiceOut]
