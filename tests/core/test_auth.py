"""Every endpoint but health and docs needs credentials; scopes are enforced."""

from __future__ import annotations

import uuid

from app.clients import service as clients
from tests.conftest import Running

PUBLIC = {"/health/live", "/health/ready", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"}


def _sample_path(path: str) -> str:
    return path.replace("{purchase_id}", "abc")


async def _make_key(sluice: Running, *scopes: str) -> str:
    async with sluice.state.sessionmaker.begin() as session:
        _, key = await clients.create_client(
            session, name=f"t-{uuid.uuid4().hex[:6]}", org_id="org-test", scopes=list(scopes)
        )
    return key


async def test_every_api_route_requires_a_key(sluice: Running) -> None:
    spec = sluice.app.openapi()
    operations = [
        (method.upper(), path)
        for path, item in spec["paths"].items()
        if path not in PUBLIC
        for method in item
    ]
    assert len(operations) >= 6
    for method, path in operations:
        response = await sluice.client.request(method, _sample_path(path))
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_invalid_json_without_key_is_still_401(sluice: Running) -> None:
    response = await sluice.client.post(
        "/v1/inquiries", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


async def test_health_and_docs_are_public(sluice: Running) -> None:
    for path in ("/health/live", "/health/ready", "/docs", "/openapi.json"):
        assert (await sluice.client.get(path)).status_code == 200, path


async def test_wrong_key_is_401_and_bearer_works(sluice: Running, sandbox) -> None:  # type: ignore[no-untyped-def]
    assert (await sluice.client.get("/v1/comm-logs", headers={"X-API-Key": "sk_nope"})).status_code == 401
    key = await _make_key(sluice, "admin")
    response = await sluice.client.get("/v1/comm-logs", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


async def test_scope_is_enforced(sluice: Running, sandbox) -> None:  # type: ignore[no-untyped-def]
    partner_key = await _make_key(sluice, "partner")
    orders_key = await _make_key(sluice, "orders")
    assert (await sluice.client.get("/v1/products", headers=sluice.headers(partner_key))).status_code == 200
    denied = await sluice.client.get("/v1/products", headers=sluice.headers(orders_key))
    assert denied.status_code == 403
    assert denied.json()["code"] == "forbidden"
    assert denied.json()["missing_scopes"] == ["partner"]
    assert (await sluice.client.get("/v1/comm-logs", headers=sluice.headers(partner_key))).status_code == 403
    assert (await sluice.client.get("/metrics", headers=sluice.headers(partner_key))).status_code == 403


async def test_revoked_key_stops_working(sluice: Running) -> None:
    key = await _make_key(sluice, "admin")
    assert (await sluice.client.get("/v1/comm-logs", headers={"X-API-Key": key})).status_code == 200
    async with sluice.state.sessionmaker.begin() as session:
        principal = await clients.find_by_key_hash(session, clients.hash_key(key))
        assert principal is not None
        await clients.revoke_client(session, principal.id)
    sluice.state.authenticator.forget()
    assert (await sluice.client.get("/v1/comm-logs", headers={"X-API-Key": key})).status_code == 401


async def test_keys_are_stored_hashed(sluice: Running) -> None:
    key = await _make_key(sluice, "partner")
    async with sluice.state.sessionmaker() as session:
        rows = await clients.list_clients(session)
    stored = [c for c in rows if c.key_hash == clients.hash_key(key)]
    assert stored and key not in (stored[0].key_hash, stored[0].key_prefix)
