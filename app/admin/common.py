"""What the domain admin views share: reaching the app's state, binding views to one app,
refusing cross-site actions, going back to where an action started, and reporting refusals."""

from __future__ import annotations

import types
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from sqladmin.flash import Flash, FlashLevel
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
