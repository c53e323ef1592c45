"""The web admin at /admin: an admin API key logs in; others do not."""

from __future__ import annotations

import uuid

from app.clients import service as clients
from tests.conftest import ADMIN_KEY, Running


async def test_admin_requires_login(sluice: Running) -> None:
    response = await sluice.client.get("/admin/", follow_redirects=False)
    assert response.status_code in (302, 303, 307)
    assert "/admin/login" in response.headers["location"]


async def test_admin_login_and_views(sluice: Running) -> None:
    response = await sluice.client.post(
        "/admin/login", data={"username": "admin", "password": ADMIN_KEY}, follow_redirects=False
    )
    assert response.status_code in (302, 303)
    # The session cookie is never sent with a request started from another site (no CSRF
    # through the admin's GET action links), and scripts cannot read it.
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith("sluice_admin=") and "samesite=strict" in cookie and "httponly" in cookie
    for view in ("api-client", "comm-log"):
        page = await sluice.client.get(f"/admin/{view}/list")
        assert page.status_code == 200, view
    assert ADMIN_KEY not in (await sluice.client.get("/admin/api-client/list")).text


async def test_non_admin_key_cannot_log_in(sluice: Running) -> None:
    async with sluice.state.sessionmaker.begin() as session:
        _, key = await clients.create_client(
            session, name=f"p-{uuid.uuid4().hex[:6]}", org_id="o", scopes=["partner"]
        )
    response = await sluice.client.post(
        "/admin/login", data={"username": "x", "password": key}, follow_redirects=False
    )
    assert response.status_code == 400
    assert (await sluice.client.get("/admin/api-client/list", follow_redirects=False)).status_code in (
        302,
        303,
        307,
    )
