"""The orders admin in-process: validation shown on the form, stale edits refused, deletes kept
as tombstones (bulk too), collision resolve actions, the sync status page."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from app.orders.models import Order
from app.orders.sync_states import SyncState
from tests.airlock.test_admin import login, page
from tests.conftest import Running
from tests.orders.test_api import create

FORM = {
    "customer_name": "Ada Lovelace",
    "customer_email": "ada@example.com",
    "currency": "EUR",
    "status": "new",
    "lines": "PLN20; Prepaid 20; 2; 10.25",
    "notes": "",
    "save": "Save",
}


async def post(sluice: Running, path: str, data: dict[str, Any]) -> Any:
    return await sluice.client.post(path, data=data, follow_redirects=False)


async def test_create_edit_and_refusals(sluice: Running) -> None:
    await login(sluice)
    created = await post(sluice, "/admin/order/create", FORM)
    assert created.status_code == 302, created.text
    async with sluice.state.sessionmaker() as session:
        order = (await session.scalars(select(Order))).one()
    assert order.total == 20.5 and order.sync_state == SyncState.ST_NEW and order.changed_by == "sluice"

    bad = await post(sluice, "/admin/order/create", {**FORM, "lines": "PLN20; Prepaid 20; 0; 10.25"})
    assert bad.status_code == 400 and "quantity" in bad.text
    bad = await post(sluice, "/admin/order/create", {**FORM, "lines": "just text"})
    assert bad.status_code == 400 and "expected" in bad.text
    bad = await post(sluice, "/admin/order/create", {**FORM, "currency": "ZZZ"})
    assert bad.status_code == 400 and "currency" in bad.text

    edit = f"/admin/order/edit/{order.id}"
    shown = await page(sluice, edit)
    assert "PLN20; Prepaid 20; 2; 10.25" in shown
    saved = await post(sluice, edit, {**FORM, "version": "1", "notes": "second", "status": "paid"})
    assert saved.status_code == 302, saved.text
    # A form opened on version 1 cannot overwrite version 2.
    stale = await post(sluice, edit, {**FORM, "version": "1", "notes": "stale"})
    assert stale.status_code == 400 and "version 2" in stale.text
    async with sluice.state.sessionmaker() as session:
        order = (await session.scalars(select(Order))).one()
    assert (order.version, order.notes, order.status) == (2, "second", "paid")
    assert (await sluice.client.get("/admin/order/edit/not-a-uuid")).status_code == 404


async def test_delete_keeps_tombstones_and_resolve_actions(sluice: Running) -> None:
    await login(sluice)
    first, second = await create(sluice), await create(sluice)
    deleted = await sluice.client.delete(
        "/admin/order/delete", params={"pks": f"{first['id']},{second['id']}"}
    )
    assert deleted.status_code == 200, deleted.text
    async with sluice.state.sessionmaker() as session:
        rows = (await session.scalars(select(Order))).all()
    assert len(rows) == 2 and all(o.deleted and o.sync_state == SyncState.ST_DEL for o in rows)

    third = await create(sluice, notes="mine")
    async with sluice.state.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(third["id"]))
        assert order is not None
        order.sync_state = SyncState.ST_COLLISION.value
        order.remote_copy = {
            **third,
            "notes": "theirs",
            "version": 2,
            "changed_by": "peer",
            "sync_state": "ST_UPD",
        }
        await session.commit()
    listed = await page(sluice, "/admin/order/list")
    assert "ST_COLLISION" in listed
    response = await sluice.client.get(
        "/admin/order/action/take-remote", params={"pks": third["id"]}, follow_redirects=False
    )
    assert response.status_code == 302
    async with sluice.state.sessionmaker() as session:
        order = await session.get(Order, uuid.UUID(third["id"]))
        assert order is not None
        assert (order.notes, order.version, order.sync_state) == ("theirs", 3, SyncState.ST_UPD)
        assert order.resolution_pending and order.remote_copy is None
    refused = await sluice.client.get(
        "/admin/order/action/keep-local", params={"pks": third["id"]}, follow_redirects=True
    )
    assert "not in collision" in refused.text

    status = await page(sluice, "/admin/sync-status")
    assert "No peer configured" in status and "ST_DEL" in status
    assert 'id="sync-lag"' in status and 'id="sync-lag-push_pending"' in status


async def test_refused_input_is_not_logged_as_an_error(sluice: Running, caplog: Any) -> None:
    """sqladmin logs what a save raises at ERROR with a traceback; what the user got wrong is
    only INFO (the form shows it), so that ERROR stays meaningful."""
    await login(sluice)
    with caplog.at_level("INFO", logger="sqladmin.application"):
        bad = await post(sluice, "/admin/order/create", {**FORM, "currency": "ZZZ"})
    assert bad.status_code == 400 and "currency" in bad.text
    records = [r for r in caplog.records if r.name == "sqladmin.application"]
    assert records and all(r.levelname == "INFO" and r.exc_info is None for r in records)
