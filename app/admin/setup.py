from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI
from sqladmin import Admin
from sqladmin.authentication import AuthenticationBackend
from starlette.requests import Request

from app.admin.airlock import airlock_views
from app.admin.common import REFUSED_INPUT_FILTER
from app.admin.orders import install_orders_admin
from app.admin.templates import install_templates
from app.admin.throttling import install_throttling_admin
from app.admin.views import ApiClientAdmin, CommLogAdmin, DirectoryServiceAdmin
from app.clients.service import hash_key
from app.state import AppState


class ApiKeyAdminAuth(AuthenticationBackend):
    """The admin login form takes an API key with the admin scope as its password.

    The session keeps only the key's hash, and every page re-checks it, so revoking the key
    ends the session (within auth_cache_ttl).
    """

    def __init__(self, state: AppState, secret_key: str) -> None:
        # SameSite=strict: the browser never sends the admin session with a request started
        # from another site, so sqladmin's actions (GET links) cannot be triggered cross-site
        # even by a browser that does not send Sec-Fetch-Site (checked too, refuse_cross_site).
        super().__init__(
            secret_key=secret_key,
            session_cookie="sluice_admin",
            same_site="strict",
            https_only=state.settings.public_url.startswith("https://"),
        )
        self._state = state

    async def login(self, request: Request) -> bool:
        form = await request.form()
        key = str(form.get("password") or "").strip()
        if not key:
            return False
        principal = await self._state.authenticator.authenticate(key)
        if principal is None or not principal.has("admin"):
            return False
        request.session.update({"key_hash": hash_key(key), "who": principal.name})
        return True

    async def logout(self, request: Request) -> bool:
        request.session.clear()
        return True

    async def authenticate(self, request: Request) -> bool:
        digest = request.session.get("key_hash")
        if not digest:
            return False
        principal = await self._state.authenticator.authenticate_digest(str(digest))
        return principal is not None and principal.has("admin")


def mount_admin(app: FastAPI, state: AppState) -> Admin:
    """Mount the admin on `app`; later domains add their views to the returned Admin."""
    secret = (
        state.settings.secret_key.get_secret_value()
        if state.settings.secret_key
        else secrets.token_urlsafe(32)
    )
    admin = Admin(
        app,
        session_maker=state.sessionmaker,
        base_url="/admin",
        title="Sluice admin",
        authentication_backend=ApiKeyAdminAuth(state, secret),
    )
    install_templates(admin)
    logging.getLogger("sqladmin.application").addFilter(REFUSED_INPUT_FILTER)  # once: same object
    admin.add_view(ApiClientAdmin)
    admin.add_view(CommLogAdmin)
    for view in airlock_views(app):
        admin.add_view(view)
    install_throttling_admin(admin, app)
    install_orders_admin(admin, app)
    admin.add_view(DirectoryServiceAdmin)
    return admin
