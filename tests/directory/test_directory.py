"""The service directory: registration, resolution, credentials only for the dedicated scope,
and the health loop against real servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.clients.service import create_client
from app.directory import service as directory
from tests.conftest import Running, Sandbox

SERVICE = {
    "name": "neorezo-billing_invoice-eshop",
    "base_url": "https://billing.example.com/api/",
    "stage": "prod",
    "description": "Invoices for the e-shop",
    "tags": ["billing", "eshop"],
    "credentials": "tok_super_secret_value",
}


@pytest.fixture(autouse=True)
async def _clean(database_url: str) -> AsyncIterator[None]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("TRUNCATE directory_service")
    finally:
        await conn.close()
    yield


@pytest.fixture
async def sluice(start_app: Any, sandbox: Sandbox) -> AsyncIterator[Running]:
    async with start_app(directory_secret_key="a passphrase for the tests") as running:
        yield running


async def test_credentials_need_a_key_when_the_database_is_shared(start_app: Any, sandbox: Sandbox) -> None:
    async with start_app() as sluice:  # Postgres, no SECRET_KEY, no DIRECTORY_SECRET_KEY
        refused = await sluice.client.post("/v1/directory/services", json=SERVICE, headers=sluice.headers())
        assert refused.status_code == 409 and "DIRECTORY_SECRET_KEY" in refused.json()["detail"]
        without = {k: v for k, v in SERVICE.items() if k != "credentials"}
        assert (
            await sluice.client.post("/v1/directory/services", json=without, headers=sluice.headers())
        ).status_code == 201


async def key_with(sluice: Running, *scopes: str) -> str:
    async with sluice.state.sessionmaker() as session:
        _, key = await create_client(session, name=f"dir {'+'.join(scopes)}", org_id="default", scopes=scopes)
        await session.commit()
    return key


async def test_register_resolve_update_remove(sluice: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = await sluice.client.post("/v1/directory/services", json=SERVICE, headers=sluice.headers())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["base_url"] == "https://billing.example.com/api" and body["has_credentials"] is True
    assert body["credentials"] is None and body["health_status"] == "unchecked"
    assert created.headers["location"] == "/v1/directory/services/neorezo-billing_invoice-eshop"
    again = await sluice.client.post("/v1/directory/services", json=SERVICE, headers=sluice.headers())
    assert again.status_code == 409

    reader = await key_with(sluice, "directory")
    trusted = await key_with(sluice, "directory", "directory_credentials")
    url = "/v1/directory/services/neorezo-billing_invoice-eshop"
    plain = (await sluice.client.get(url, headers=sluice.headers(reader))).json()
    assert plain["credentials"] is None and plain["tags"] == ["billing", "eshop"]
    revealed = (await sluice.client.get(url, headers=sluice.headers(trusted))).json()
    assert revealed["credentials"] == "tok_super_secret_value"
    # Readers may not change the directory.
    assert (await sluice.client.delete(url, headers=sluice.headers(reader))).status_code == 403
    # Stored encrypted, never in the logs.
    async with sluice.state.sessionmaker() as session:
        stored = await directory.get(session, "neorezo-billing_invoice-eshop")
    assert (
        stored.credentials_encrypted is not None and b"tok_super_secret" not in stored.credentials_encrypted
    )
    assert "tok_super_secret_value" not in caplog.text

    # PUT without credentials keeps them; "" removes them.
    update = {k: v for k, v in SERVICE.items() if k not in ("name", "credentials")} | {"stage": "preprod"}
    changed = await sluice.client.put(url, json=update, headers=sluice.headers())
    assert (
        changed.status_code == 200
        and changed.json()["stage"] == "preprod"
        and changed.json()["has_credentials"]
    )
    cleared = await sluice.client.put(url, json=update | {"credentials": ""}, headers=sluice.headers())
    assert cleared.json()["has_credentials"] is False

    listed = (
        await sluice.client.get(
            "/v1/directory/services", params={"tag": "billing"}, headers=sluice.headers(reader)
        )
    ).json()
    assert [s["name"] for s in listed["items"]] == ["neorezo-billing_invoice-eshop"]
    none = (
        await sluice.client.get(
            "/v1/directory/services", params={"stage": "prod"}, headers=sluice.headers(reader)
        )
    ).json()
    assert none["items"] == []

    assert (await sluice.client.delete(url, headers=sluice.headers())).status_code == 204
    missing = await sluice.client.get(url, headers=sluice.headers(reader))
    assert missing.status_code == 404
    assert (
        missing.headers["content-type"] == "application/problem+json"
        and missing.json()["code"] == "not_found"
    )


async def test_bad_registrations_are_422(sluice: Running) -> None:
    cases: list[dict[str, Any]] = [
        {**SERVICE, "name": "Has Spaces"},
        {**SERVICE, "name": ""},
        {**SERVICE, "base_url": "not a url"},
        {**SERVICE, "base_url": "ftp://example.com"},
        {**SERVICE, "tags": "billing"},
        {**SERVICE, "surprise": 1},
        {**SERVICE, "description": "nul \u0000 inside"},  # PostgreSQL stores no NUL in text
    ]
    for body in cases:
        response = await sluice.client.post("/v1/directory/services", json=body, headers=sluice.headers())
        assert response.status_code == 422, (body, response.text)
    assert (
        await sluice.client.get("/v1/directory/services/BAD NAME", headers=sluice.headers())
    ).status_code == 422
    assert (await sluice.client.get("/v1/directory/services")).status_code == 401


async def test_health_loop_keeps_status_and_last_seen(sluice: Running, sandbox: Sandbox) -> None:
    services = {
        "up-service": f"{sandbox.url}/_sandbox/arrivals",
        "not-found-service": f"{sandbox.url}/no-such-health",
        "closed-port-service": "http://127.0.0.1:9/health",
    }
    for name, health in services.items():
        body = {**SERVICE, "name": name, "health_url": health}
        assert (
            await sluice.client.post("/v1/directory/services", json=body, headers=sluice.headers())
        ).status_code == 201
    checked = await directory.check_all(sluice.state.settings, sluice.state.sessionmaker)
    assert checked == 3
    shown = {
        s["name"]: s
        for s in (await sluice.client.get("/v1/directory/services", headers=sluice.headers())).json()["items"]
    }
    assert shown["up-service"]["health_status"] == "up" and shown["up-service"]["last_seen_at"]
    assert shown["not-found-service"]["health_status"] == "down"
    assert shown["not-found-service"]["last_health_error"] == "HTTP 404"
    assert (
        shown["closed-port-service"]["health_status"] == "down"
        and shown["closed-port-service"]["last_seen_at"] is None
    )
    assert "ConnectError" in shown["closed-port-service"]["last_health_error"]
    metrics = (await sluice.client.get("/metrics", headers=sluice.headers())).text
    assert 'sluice_directory_service_up{service="up-service"} 1.0' in metrics


async def test_admin_shows_services_and_health_but_never_credentials(sluice: Running) -> None:
    from tests.airlock.test_admin import login, page

    await sluice.client.post("/v1/directory/services", json=SERVICE, headers=sluice.headers())
    await login(sluice)
    listed = await page(sluice, "/admin/directory-service/list")
    assert "neorezo-billing_invoice-eshop" in listed and "unchecked" in listed
    detail = await page(sluice, "/admin/directory-service/details/neorezo-billing_invoice-eshop")
    assert (
        "billing.example.com" in detail
        and "tok_super_secret" not in detail
        and "credentials" not in detail.lower()
    )


async def test_concurrent_registrations_of_one_name_are_one_201_and_409s(sluice: Running) -> None:
    body = {k: v for k, v in SERVICE.items() if k != "credentials"}
    answers = await asyncio.gather(
        *(sluice.client.post("/v1/directory/services", json=body, headers=sluice.headers()) for _ in range(8))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7, codes
