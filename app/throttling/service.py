"""Throttling configurations: validation, lifecycle and the original's response shapes (seed 004).

Lifecycle: created -> updated -> deployed -> undeployed (-> updated -> deployed, a new runtime
version). Updating a deployed configuration changes its active runtime version at once.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.service import Principal
from app.db import utcnow
from app.throttling import patterns
from app.throttling.errors import numbered, validation_error
from app.throttling.models import ConfigState, ThrottlingConfig, ThrottlingRuntime

logger = logging.getLogger("sluice.throttling")

AUTHORING_FORMAT_VERSION = "1.0"
MIN_THROUGHPUT, MAX_THROUGHPUT = 200, 5000
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Sandbox ids are stable per (organisation, sandbox name), as the original's are per sandbox.
_SANDBOX_NAMESPACE = uuid.UUID("6f1d3a52-5c5e-4d5b-9a43-0c3f4b7f0d11")


def sandbox_id(org_id: str, sandbox_name: str) -> str:
    return str(uuid.uuid5(_SANDBOX_NAMESPACE, f"{org_id}\x00{sandbox_name}"))


@dataclass(frozen=True, slots=True)
class ConfigInput:
    name: str | None
    description: str | None
    url_pattern: str
    methods: list[str]
    max_throughput: int


def parse_body(raw: bytes) -> ConfigInput:
    """The configuration in a request body, or the original's validation error."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise validation_error(106, "invalid payload (not JSON)") from exc
    if not isinstance(body, dict):
        raise validation_error(106, "invalid payload (not a JSON object)")
    for attribute in ("urlPattern", "methods", "maxThroughput"):
        if body.get(attribute) in (None, "", []):
            raise validation_error(100, f"{attribute} required")
    for attribute in ("name", "description", "urlPattern"):
        value = body.get(attribute)
        if value is not None and not isinstance(value, str):
            raise validation_error(106, f"invalid payload ({attribute} must be a string)")
        if isinstance(value, str) and "\x00" in value:
            # PostgreSQL stores no NUL in text: refused here, not by the database as a 1464.
            raise validation_error(106, f"invalid payload ({attribute} holds a NUL character)")
    throughput = body["maxThroughput"]
    # bool is an int in Python; `true` is not a throughput.
    if (
        isinstance(throughput, bool)
        or not isinstance(throughput, int)
        or not MIN_THROUGHPUT <= throughput <= MAX_THROUGHPUT
    ):
        raise validation_error(
            101,
            f"maxThroughput is required and must be an integer from {MIN_THROUGHPUT} to {MAX_THROUGHPUT}",
        )
    url_pattern = body["urlPattern"]
    try:
        patterns.parse(url_pattern)
    except patterns.PatternError as exc:
        raise validation_error(exc.code, str(exc)) from exc
    methods = body["methods"]
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise validation_error(106, "invalid payload (methods must be a list of HTTP method names)")
    wanted: list[str] = []
    for method in methods:
        upper = method.strip().upper()
        if upper not in HTTP_METHODS:
            raise validation_error(106, f"invalid payload (unknown HTTP method {method!r})")
        if upper not in wanted:
            wanted.append(upper)
    return ConfigInput(
        name=body.get("name"),
        description=body.get("description"),
        url_pattern=url_pattern,
        methods=wanted,
        max_throughput=throughput,
    )


# ---------------------------------------------------------------------- shapes


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _metadata(config: ThrottlingConfig) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "createdBy": config.created_by,
        "createdById": config.created_by_id,
        "lastModifiedBy": config.last_modified_by,
        "lastModifiedById": config.last_modified_by_id,
        "createdAt": _timestamp(config.created_at),
        "lastModifiedAt": _timestamp(config.last_modified_at),
    }
    if config.last_deployed_at is not None:
        metadata.update(
            lastDeployedBy=config.last_deployed_by,
            lastDeployedById=config.last_deployed_by_id,
            lastDeployedAt=_timestamp(config.last_deployed_at),
        )
    return metadata


def element(config: ThrottlingConfig, *, with_id: bool) -> dict[str, Any]:
    """The configuration as the original shows it (created: no `_id`/`hasBeenDeployed`)."""
    shape: dict[str, Any] = {}
    if with_id:
        shape["_id"] = f"{config.uid}_{config.sandbox_id}"
    if config.name is not None:
        shape["name"] = config.name
    if config.description is not None:
        shape["description"] = config.description
    shape.update(
        urlPattern=config.url_pattern,
        methods=list(config.methods),
        maxThroughput=config.max_throughput,
        orgId=config.org_id,
        sandboxId=config.sandbox_id,
        sandboxName=config.sandbox_name,
        uid=config.uid,
        metadata=_metadata(config),
        state=config.state,
        authoringFormatVersion=AUTHORING_FORMAT_VERSION,
    )
    if config.runtime_version:
        shape["version"] = f"{config.runtime_version}.0"
    if with_id:
        shape["hasBeenDeployed"] = config.has_been_deployed
    return shape


def can_deploy(config: ThrottlingConfig) -> dict[str, Any]:
    """`ok` when deploy would succeed now, else `error` with the reasons."""
    errors: list[dict[str, Any]] = []
    if config.state == ConfigState.DEPLOYED:
        errors.append({"code": 14466, "message": "Can't deploy throttling config: already deployed"})
    try:
        patterns.parse(config.url_pattern)
    except patterns.PatternError as exc:
        errors.append({"code": f"ERR_THROTTLING_CONFIG_{exc.code}", "message": str(exc)})
    if not MIN_THROUGHPUT <= config.max_throughput <= MAX_THROUGHPUT:
        errors.append({"code": "ERR_THROTTLING_CONFIG_101", "message": "maxThroughput out of range"})
    if errors:
        return {"validationStatus": "error", "errors": errors}
    return {"validationStatus": "ok"}


# ---------------------------------------------------------------------- operations


async def get_config(session: AsyncSession, org_id: str, uid: str, *, lock: bool = False) -> ThrottlingConfig:
    query = select(ThrottlingConfig).where(ThrottlingConfig.uid == uid, ThrottlingConfig.org_id == org_id)
    if lock:
        query = query.with_for_update()
    config = await session.scalar(query)
    if config is None:
        raise numbered(14467)
    return config


async def list_configs(session: AsyncSession, org_id: str) -> list[ThrottlingConfig]:
    rows = await session.scalars(
        select(ThrottlingConfig)
        .where(ThrottlingConfig.org_id == org_id)
        .order_by(ThrottlingConfig.created_at)
    )
    return list(rows.all())


def new_config(data: ConfigInput, principal: Principal, sandbox_name: str) -> ThrottlingConfig:
    now = utcnow()
    identity = principal.name[:200]
    return ThrottlingConfig(
        uid=str(uuid.uuid4()),
        org_id=principal.org_id,
        sandbox_id=sandbox_id(principal.org_id, sandbox_name),
        sandbox_name=sandbox_name,
        name=data.name,
        description=data.description,
        url_pattern=data.url_pattern,
        methods=data.methods,
        max_throughput=data.max_throughput,
        state=ConfigState.CREATED,
        has_been_deployed=False,
        runtime_version=0,
        created_by=identity,
        created_by_id=principal.id,
        created_at=now,
        last_modified_by=identity,
        last_modified_by_id=principal.id,
        last_modified_at=now,
    )


async def active_runtime(session: AsyncSession, config: ThrottlingConfig) -> ThrottlingRuntime | None:
    return await session.scalar(
        select(ThrottlingRuntime)
        .where(
            ThrottlingRuntime.config_uid == config.uid,
            ThrottlingRuntime.version == config.runtime_version,
            ThrottlingRuntime.active.is_(True),
        )
        .with_for_update()
    )


async def apply_update(
    session: AsyncSession, config: ThrottlingConfig, data: ConfigInput, principal: Principal
) -> bool:
    """Change the config; True when the runtime changed too (it is deployed)."""
    runtime = None
    if config.state == ConfigState.DEPLOYED:
        runtime = await active_runtime(session, config)
        if runtime is None:
            raise numbered(1461)
    config.name = data.name
    config.description = data.description
    config.url_pattern = data.url_pattern
    config.methods = data.methods
    config.max_throughput = data.max_throughput
    config.last_modified_by = principal.name[:200]
    config.last_modified_by_id = principal.id
    config.last_modified_at = utcnow()
    if runtime is not None:
        # A deployed configuration takes the new values at once, under the same version.
        runtime.url_pattern = data.url_pattern
        runtime.methods = data.methods
        runtime.max_throughput = data.max_throughput
        return True
    config.state = ConfigState.UPDATED
    return False


async def deploy(session: AsyncSession, config: ThrottlingConfig, principal: Principal) -> None:
    if config.state == ConfigState.DEPLOYED:
        raise numbered(14466)
    now = utcnow()
    config.runtime_version += 1
    session.add(
        ThrottlingRuntime(
            config_uid=config.uid,
            version=config.runtime_version,
            org_id=config.org_id,
            url_pattern=config.url_pattern,
            methods=list(config.methods),
            max_throughput=config.max_throughput,
            active=True,
            deployed_at=now,
        )
    )
    config.state = ConfigState.DEPLOYED
    config.has_been_deployed = True
    config.last_deployed_by = principal.name[:200]
    config.last_deployed_by_id = principal.id
    config.last_deployed_at = now


async def undeploy(
    session: AsyncSession, config: ThrottlingConfig, principal: Principal | None = None
) -> None:
    if config.state != ConfigState.DEPLOYED:
        raise numbered(14468)
    # Inactive at once for new calls; calls already queued under it keep their slots for
    # THROTTLE_UNDEPLOY_GRACE, then the maintenance loop drops them with the runtime row.
    await session.execute(
        update(ThrottlingRuntime)
        .where(ThrottlingRuntime.config_uid == config.uid, ThrottlingRuntime.active.is_(True))
        .values(active=False, undeployed_at=utcnow())
    )
    config.state = ConfigState.UNDEPLOYED


async def remove(session: AsyncSession, config: ThrottlingConfig, *, force: bool) -> bool:
    """Delete the config (undeploying it first when forced); True if it was deployed."""
    was_deployed = config.state == ConfigState.DEPLOYED
    if was_deployed:
        if not force:
            raise numbered(1456)
        await undeploy(session, config)
    await session.execute(delete(ThrottlingConfig).where(ThrottlingConfig.uid == config.uid))
    return was_deployed
