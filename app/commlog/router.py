from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.commlog import service
from app.commlog.schemas import CommLogOut, CommLogPage
from app.db import SessionDep
from app.errors import BadRequest
from app.security import require_scopes

router = APIRouter(prefix="/v1/comm-logs", tags=["comm-log"], dependencies=[Depends(require_scopes("admin"))])


@router.get("", response_model=CommLogPage, summary="Search the communication log")
async def list_comm_logs(
    session: SessionDep,
    client_id: Annotated[str | None, Query(max_length=128, description="X-Client-ID of the caller")] = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    error_code: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="inclusive, ISO 8601")] = None,
    until: Annotated[datetime | None, Query(description="exclusive, ISO 8601")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> CommLogPage:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"{name} needs a timezone offset (e.g. Z)")
    try:
        before_id = service.decode_cursor(cursor) if cursor else None
    except ValueError:
        raise BadRequest("cursor is not valid") from None
    rows, next_id = await service.list_entries(
        session,
        client_id=client_id,
        status=status,
        error_code=error_code,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
    return CommLogPage(
        data=[CommLogOut.model_validate(r) for r in rows],
        meta={"next_cursor": service.encode_cursor(next_id) if next_id else None, "count": len(rows)},
    )
