"""HTTP only: the service directory (scope `directory` to read, `admin` to change;
credentials only to clients with `directory_credentials`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from app.clients.service import Principal
from app.db import SessionDep
from app.directory import service
from app.directory.schemas import NAME_PATTERN, ServiceIn, ServiceList, ServiceOut, ServiceUpdate
from app.security import require_scopes
from app.settings import Settings
from app.state import AppState

router = APIRouter(prefix="/v1/directory/services", tags=["directory"])
ReaderDep = Annotated[Principal, Depends(require_scopes("directory"))]
AdminDep = Annotated[Principal, Depends(require_scopes("admin"))]
NameParam = Annotated[str, Path(pattern=NAME_PATTERN)]
CREDENTIALS_SCOPE = "directory_credentials"


def _settings(request: Request) -> Settings:
    state: AppState = request.app.state.sluice
    return state.settings


@router.post("", response_model=ServiceOut, status_code=201, summary="Register a service")
async def register_service(
    data: ServiceIn, request: Request, response: Response, session: SessionDep, principal: AdminDep
) -> ServiceOut:
    registered = await service.register(session, data, _settings(request))
    response.headers["Location"] = f"/v1/directory/services/{registered.name}"
    return service.to_out(registered, _settings(request), with_credentials=False)


@router.get("", response_model=ServiceList, summary="List the registered services")
async def list_services(
    request: Request,
    session: SessionDep,
    principal: ReaderDep,
    tag: Annotated[str | None, Query(max_length=50)] = None,
    stage: Annotated[str | None, Query(max_length=50)] = None,
) -> ServiceList:
    rows = await service.list_services(session, tag=tag, stage=stage)
    reveal = principal.has(CREDENTIALS_SCOPE)
    return ServiceList(items=[service.to_out(s, _settings(request), with_credentials=reveal) for s in rows])


@router.get("/{name}", response_model=ServiceOut, summary="Resolve a service by name")
async def resolve_service(
    name: NameParam, request: Request, session: SessionDep, principal: ReaderDep
) -> ServiceOut:
    found = await service.get(session, name)
    return service.to_out(found, _settings(request), with_credentials=principal.has(CREDENTIALS_SCOPE))


@router.put("/{name}", response_model=ServiceOut, summary="Change a registered service")
async def update_service(
    name: NameParam, data: ServiceUpdate, request: Request, session: SessionDep, principal: AdminDep
) -> ServiceOut:
    updated = await service.update(session, name, data, _settings(request))
    return service.to_out(updated, _settings(request), with_credentials=False)


@router.delete("/{name}", status_code=204, summary="Remove a service")
async def remove_service(name: NameParam, session: SessionDep, principal: AdminDep) -> Response:
    await service.remove(session, name)
    return Response(status_code=204)
