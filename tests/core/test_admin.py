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


async def test_bad_identifiers_and_search_terms_are_not_server_errors(sluice: Running) -> None:
    """A details/edit id the primary key cannot hold is a 404 and a search term with a NUL
    character lists nothing special, in every admin view (sqladmin alone answers 500)."""
    await sluice.client.post("/admin/login", data={"username": "admin", "password": ADMIN_KEY})
    views = [
        "api-client",
        "comm-log",
        "directory-service",
        "order",
        "async-call",
        "throttling-config",
        "throttling-runtime",
        "airlock-connector",
    ]
    for view in views:
        for pk in ("not-an-id", "99999999999999999999999", "a%00b", "x" * 600):
            response = await sluice.client.get(f"/admin/{view}/details/{pk}")
            assert response.status_code == 404, (view, pk, response.status_code)
        listed = await sluice.client.get(f"/admin/{view}/list", params={"search": "a\x00b"})
        assert listed.status_code == 200, (view, listed.status_code)
