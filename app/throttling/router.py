"""The throttling-configuration API, compatible with the original's (seed 004).

Mounted under THROTTLING_BASE_PATH (default /authoring). Every call needs an API key with the
`throttling` scope, `x-gw-ims-org-id` equal to the key's organisation and `x-sandbox-name` naming
a production sandbox. Bodies are parsed here rather than by FastAPI so that every malformed body
gets the original's error codes, not a generic 422.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.clients.service import Principal
from app.security import require_scopes
from app.state import AppState
from app.throttling import service
from app.throttling.errors import AUTHORIZATION, AuthoringError, numbered

logger = logging.getLogger("sluice.throttling")

router = APIRouter(tags=["throttling"])

_authorised = require_scopes("throttling")


@dataclass(frozen=True, slots=True)
class Caller:
    principal: Principal
    sandbox: str
    state: AppState

    @property
    def org_id(self) -> str:
        return self.principal.org_id


async def caller(
    request: Request,
    principal: Annotated[Principal, Depends(_authorised)],
    org_header: Annotated[str | None, Header(alias="x-gw-ims-org-id")] = None,
    sandbox_header: Annotated[str | None, Header(alias="x-sandbox-name")] = None,
) -> Caller:
    if not org_header or not sandbox_header:
        missing = [
            n for n, v in (("x-gw-ims-org-id", org_header), ("x-sandbox-name", sandbox_header)) if not v
        ]
        raise AuthoringError(400, 4001, f"Missing required header(s): {', '.join(missing)}")
    if org_header != principal.org_id:
        raise AuthoringError(
            403, 4003, "x-gw-ims-org-id does not match the API key's organisation", family=AUTHORIZATION
        )
    state: AppState = request.app.state.sluice
    settings = state.settings
    if sandbox_header not in settings.known_sandboxes:
        raise numbered(4000, context="app.throttling.sandboxes")
    if sandbox_header not in settings.production_sandboxes:
        raise numbered(1463, schema=f"throttlingConfigs${sandbox_header}")
    return Caller(principal, sandbox_header, state)


CallerDep = Annotated[Caller, Depends(caller)]


@asynccontextmanager
async def _operation(caller: Caller, failure_code: int) -> AsyncIterator[AsyncSession]:
    """A transaction whose unexpected failures become the operation's numbered error."""
    try:
        async with caller.state.sessionmaker.begin() as session:
            yield session
    except AuthoringError:
        raise
    except Exception as exc:
        logger.exception("throttling operation failed unexpectedly (%d)", failure_code)
        raise numbered(failure_code, context=f"app.throttling:{type(exc).__name__}") from exc


async def _announce(caller: Caller) -> None:
    """Tell every replica the deployed rules changed (they also re-read them periodically)."""
    gate = caller.state.throttle
    try:
        await gate.changed()
    except Exception as exc:
        logger.error(
            "could not announce a throttling change (%r); replicas pick it up on their next full reload", exc
        )


def _uri(caller: Caller, uid: str) -> str:
    return f"{caller.state.settings.throttling_base_path}/throttlingConfigs/{uid}"


async def _listing(caller: Caller) -> dict[str, Any]:
    async with _operation(caller, 1460) as session:
        configs = await service.list_configs(session, caller.org_id)
        results = [service.element(c, with_id=True) for c in configs]
    return {"results": results, "total": len(results)}


@router.post("/throttlingConfigs", summary="Create a throttling configuration")
async def create_config(request: Request, caller: CallerDep) -> dict[str, Any]:
    data = service.parse_body(await request.body())
    config = service.new_config(data, caller.principal, caller.sandbox)
    try:
        async with _operation(caller, 1464) as session:
            if await service.list_configs(session, caller.org_id):
                raise numbered(1465, schema=f"throttlingConfigs${caller.sandbox}")
            session.add(config)
            await session.flush()
    except AuthoringError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            # Two creates raced: the unique constraint on the organisation decided.
            raise numbered(1465, schema=f"throttlingConfigs${caller.sandbox}") from exc
        raise
    return {
        "canDeploy": service.can_deploy(config),
        "createdElement": service.element(config, with_id=False),
        "uid": config.uid,
        "uri": _uri(caller, config.uid),
        "resStatus": "created",
    }


@router.get("/throttlingConfigs", summary="List the organisation's throttling configurations")
async def list_configs(caller: CallerDep) -> dict[str, Any]:
    return await _listing(caller)


@router.post("/list/throttlingConfigs", summary="List the organisation's throttling configurations")
async def list_configs_post(caller: CallerDep) -> dict[str, Any]:
    return await _listing(caller)


@router.get("/throttlingConfigs/{uid}", summary="Read a throttling configuration")
async def read_config(uid: str, caller: CallerDep) -> dict[str, Any]:
    async with _operation(caller, 1460) as session:
        config = await service.get_config(session, caller.org_id, uid)
        return {"result": service.element(config, with_id=True)}


@router.put("/throttlingConfigs/{uid}", summary="Update a throttling configuration")
async def update_config(uid: str, request: Request, caller: CallerDep) -> dict[str, Any]:
    data = service.parse_body(await request.body())
    async with _operation(caller, 1462) as session:
        config = await service.get_config(session, caller.org_id, uid, lock=True)
        live = await service.apply_update(session, config, data, caller.principal)
        await session.flush()
        shape = service.element(config, with_id=True)
        check = service.can_deploy(config)
    if live:
        await _announce(caller)
    return {
        "updatedElement": shape,
        "uid": uid,
        "uri": _uri(caller, uid),
        "resStatus": "updated",
        "canDeploy": check,
    }


@router.delete("/throttlingConfigs/{uid}", summary="Delete a throttling configuration")
async def delete_config(
    uid: str, caller: CallerDep, force_delete: Annotated[bool, Query(alias="forceDelete")] = False
) -> dict[str, Any]:
    async with _operation(caller, 1457) as session:
        config = await service.get_config(session, caller.org_id, uid, lock=True)
        was_deployed = await service.remove(session, config, force=force_delete)
    if was_deployed:
        await _announce(caller)
    return {"uid": uid, "resStatus": "deleted"}


@router.post("/throttlingConfigs/{uid}/deploy", summary="Deploy a throttling configuration")
async def deploy_config(uid: str, caller: CallerDep) -> dict[str, Any]:
    return await _lifecycle(uid, caller, 1458, service.deploy, "deployed")


@router.post("/throttlingConfigs/{uid}/undeploy", summary="Undeploy a throttling configuration")
async def undeploy_config(uid: str, caller: CallerDep) -> dict[str, Any]:
    return await _lifecycle(uid, caller, 1459, service.undeploy, "undeployed")


async def _lifecycle(
    uid: str,
    caller: Caller,
    failure_code: int,
    action: Callable[[AsyncSession, Any, Principal], Awaitable[None]],
    outcome: str,
) -> dict[str, Any]:
    async with _operation(caller, failure_code) as session:
        config = await service.get_config(session, caller.org_id, uid, lock=True)
        await action(session, config, caller.principal)
        await session.flush()
        shape = service.element(config, with_id=True)
    await _announce(caller)
    return {"result": shape, "uid": uid, "uri": _uri(caller, uid), "resStatus": outcome}


async def _can_deploy(uid: str, caller: Caller) -> dict[str, Any]:
    async with _operation(caller, 1460) as session:
        config = await service.get_config(session, caller.org_id, uid)
        return service.can_deploy(config)


@router.get("/throttlingConfigs/{uid}/canDeploy", summary="Check whether a configuration can be deployed")
async def can_deploy_get(uid: str, caller: CallerDep) -> dict[str, Any]:
    return await _can_deploy(uid, caller)


@router.post("/throttlingConfigs/{uid}/canDeploy", summary="Check whether a configuration can be deployed")
async def can_deploy_post(uid: str, caller: CallerDep) -> dict[str, Any]:
    return await _can_deploy(uid, caller)


runtime_router = APIRouter(prefix="/v1/throttling", tags=["throttling"])


@runtime_router.get("/runtime", summary="The throttling rules this replica enforces now")
async def runtime_rules(
    request: Request, principal: Annotated[Principal, Depends(_authorised)]
) -> dict[str, Any]:
    """For operators: what this process enforces (each replica answers for itself)."""
    state: AppState = request.app.state.sluice
    gate = state.throttle
    visible = [
        rule
        for rules in gate.rules.values()
        for rule in rules
        if principal.has("admin") or rule.org_id == principal.org_id
    ]
    return {
        "instance": state.settings.instance_name,
        "rulesVersion": gate.seen_version,
        "rules": [
            {
                "uid": rule.uid,
                "version": rule.version,
                "orgId": rule.org_id,
                "urlPattern": rule.pattern.text,
                "methods": sorted(rule.methods),
                "maxThroughput": rule.max_throughput,
                "slotIntervalMs": round(rule.interval_us / 1000, 4),
            }
            for rule in visible
        ],
    }
