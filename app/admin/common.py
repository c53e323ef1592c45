"""What the domain admin views share: reaching the app's state, binding views to one app,
404 for identifiers the key cannot hold, searching with storable terms, refusing cross-site actions, going back to where an action started, and reporting refusals."""

from __future__ import annotations

import logging
import types
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from sqladmin.flash import Flash, FlashLevel
from sqlalchemy import BigInteger, Integer, String, Uuid
from sqlalchemy import inspect as sa_inspect
from starlette.exceptions import HTTPException
from starlette.requests import Request

if TYPE_CHECKING:
    from fastapi import FastAPI

    from app.state import AppState


class SluiceView:
    """Reaches the app's AppState from an admin request.

    The admin is a mounted Starlette app, so `request.app` is the admin, not Sluice; and
    sqladmin keeps views as classes, so `bind_views` binds each mounted app to its own
    subclasses rather than to a module global (tests run several apps in one process).
    """

    sluice_app: ClassVar[FastAPI | None] = None

    @property
    def sluice(self) -> AppState:
        if self.sluice_app is None:
            raise RuntimeError(f"{type(self).__name__} used without bind_views()")
        return self.sluice_app.state.sluice  # type: ignore[no-any-return]


class RefusedInput(ValueError):
    """What the admin user got wrong. sqladmin shows the message above the form (HTTP 400); it
    is no failure of Sluice, so it is logged at INFO without a traceback (see below)."""


class RefusedInputIsNotAnError(logging.Filter):
    """sqladmin logs every exception a save raises at ERROR with its traceback, refused input
    included; this filter (on sqladmin's logger) keeps ERROR for real failures only."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, RefusedInput):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


REFUSED_INPUT_FILTER = RefusedInputIsNotAnError()


def identifier_fits(model: type, identifier: str) -> bool:
    """Whether `identifier` can be a value of the model's (single) primary key: a UUID for a
    UUID key, a non-negative integer in the column's range for an integer key, text without NUL
    within its length for a string key."""
    primary_key: tuple[Any, ...] = tuple(sa_inspect(model).primary_key)
    (column,) = primary_key
    kind: Any = column.type
    if isinstance(kind, Uuid):
        try:
            uuid.UUID(identifier)
        except ValueError:
            return False
        return True
    if isinstance(kind, Integer):
        limit = 2**63 if isinstance(kind, BigInteger) else 2**31
        return identifier.isascii() and identifier.isdigit() and int(identifier) < limit
    if isinstance(kind, String):
        return "\x00" not in identifier and (kind.length is None or len(identifier) <= kind.length)
    return True


class CheckedIdentifier:
    """A details, edit or delete request for an identifier the primary key cannot hold is a 404:
    sqladmin would answer a malformed one with a 500, an out-of-range or NUL one with a database
    error."""

    model: ClassVar[type]

    async def get_object_for_details(self, request: Request) -> Any:
        if not identifier_fits(self.model, request.path_params["pk"]):
            return None
        return await super().get_object_for_details(request)  # type: ignore[misc]

    async def get_object_for_edit(self, request: Request) -> Any:
        if not identifier_fits(self.model, request.path_params["pk"]):
            return None
        return await super().get_object_for_edit(request)  # type: ignore[misc]

    async def get_object_for_delete(self, value: Any) -> Any:
        if not identifier_fits(self.model, str(value)):
            return None
        return await super().get_object_for_delete(value)  # type: ignore[misc]


class StorableSearch:
    """Searches with a term PostgreSQL can compare: it takes no NUL character in text, and a
    term holding one (`?search=%00`) would fail the list page with a server error."""

    def search_query(self, stmt: Any, term: str) -> Any:
        return super().search_query(stmt, term.replace("\x00", ""))  # type: ignore[misc]


def bind_views(app: FastAPI, views: Iterable[type]) -> list[Any]:
    """Subclasses of `views` bound to `app`."""
    return [types.new_class(v.__name__, (v,), {}, lambda ns: ns.update(sluice_app=app)) for v in views]


def flash(request: Request, level: FlashLevel, message: str, title: str = "") -> None:
    Flash.flash(request, message, level, title)
    # sqladmin appends to a list already in the session, which Starlette's session does not see
    # as a change: with an earlier message still unread, the new one would be dropped.
    mark_modified = getattr(request.session, "mark_modified", None)
    if mark_modified is not None:
        mark_modified()


def refuse_cross_site(request: Request) -> None:
    """Actions are GET links (sqladmin's design): refuse one started from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise HTTPException(403, "Cross-site action refused")


def back_path(request: Request, identity: str) -> str:
    """The page an action was started from (a filtered list, or a record), on this admin."""
    base = urlsplit(str(request.url_for("admin:index"))).path
    referer = urlsplit(request.headers.get("referer", ""))
    # Only the path is reused, so a forged Referer cannot send the browser elsewhere.
    if referer.path.startswith(base) and "/action/" not in referer.path:
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return str(request.url_for("admin:list", identity=identity))


def flash_refused(request: Request, verb: str, refused: list[str]) -> None:
    """One error message listing (the first ten of) the records an action refused."""
    if not refused:
        return
    shown = "; ".join(refused[:10]) + (f"; and {len(refused) - 10} more" if len(refused) > 10 else "")
    flash(request, FlashLevel.error, f"Not {verb.lower()}: {shown}", title=f"{len(refused)} refused.")
