"""The batch endpoints the sync loop pushes to, and the feed's numbering of changes in flight."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from app.orders.models import Order
from app.orders.schemas import SyncAnswer
from app.orders.sync import acknowledge_batch
from tests.conftest import Running
from tests.orders.test_api import create, order_body


def replica(order_id: uuid.UUID | None = None, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    body = order_body(currency="EUR")
    body.update(
        id=str(order_id or uuid.uuid4()),
        number=f"ORD-{uuid.uuid4().hex[:8]}",
        status="new",
        created_at=now,
        updated_at=now,
        version=1,
        origin="peer",
        changed_by="peer",
        sync_state="ST_NEW",
    )
    body.update(changes)
    return body


async def test_a_batch_is_applied_and_each_replica_answered_in_its_place(sluice: Running) -> None:
    good, bad, other = replica(), replica(currency="XXQ"), replica()
    response = await sluice.client.post(
        "/v1/sync/orders/batch", json=[good, bad, other], headers=sluice.headers()
    )
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["state"] for a in answers] == ["ST_OK", "ST_ERROR", "ST_OK"]
    assert [a["ack_version"] for a in answers] == [1, None, 1]
    assert "currency" in answers[1]["error"] and answers[0]["error"] is None
    for sent in (good, other):
        held = (await sluice.client.get(f"/v1/orders/{sent['id']}", headers=sluice.headers())).json()
        assert held["sync_state"] == "ST_OK" and held["changed_by"] == "peer" and held["total"] == "25.00"
    missing = await sluice.client.get(f"/v1/orders/{bad['id']}", headers=sluice.headers())
    assert missing.status_code == 404

    # The same batch again (a lost answer): repeats, acknowledged, nothing doubled.
    again = (
        await sluice.client.post("/v1/sync/orders/batch", json=[good, other], headers=sluice.headers())
    ).json()
    assert [(a["state"], a["ack_version"]) for a in again] == [("ST_OK", 1), ("ST_OK", 1)]
    async with sluice.state.sessionmaker() as session:
        ids = [uuid.UUID(good["id"]), uuid.UUID(other["id"])]
        assert len((await session.scalars(select(Order).where(Order.id.in_(ids)))).all()) == 2

    # Changes go by PUT, new orders by POST; each refused in its place otherwise.
    changed = replica(uuid.UUID(good["id"]), version=2, sync_state="ST_UPD", notes="changed")
    mixed = await sluice.client.put(
        "/v1/sync/orders/batch", json=[changed, replica()], headers=sluice.headers()
    )
    assert [a["state"] for a in mixed.json()] == ["ST_OK", "ST_ERROR"]
    assert "PUT carries changed or deleted orders" in mixed.json()[1]["error"]
    held = (await sluice.client.get(f"/v1/orders/{good['id']}", headers=sluice.headers())).json()
    assert held["notes"] == "changed" and held["version"] == 2


async def test_a_replica_the_database_could_not_store_is_refused_alone(sluice: Running) -> None:
    """A NUL character (a peer on SQLite could hold one) or a version beyond the column's range
    fails its own item, not the batch."""
    good, nul, huge = replica(), replica(notes="a\u0000b"), replica(version=2**40)
    response = await sluice.client.post(
        "/v1/sync/orders/batch", json=[good, nul, huge], headers=sluice.headers()
    )
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["state"] for a in answers] == ["ST_OK", "ST_ERROR", "ST_ERROR"]
    assert "notes" in answers[1]["error"] and "version" in answers[2]["error"]


async def test_a_batch_too_large_or_not_a_list_is_a_422(sluice: Running) -> None:
    too_many = await sluice.client.post("/v1/sync/orders/batch", json=[{}] * 1001, headers=sluice.headers())
    assert too_many.status_code == 422
    not_a_list = await sluice.client.post("/v1/sync/orders/batch", json=replica(), headers=sluice.headers())
    assert not_a_list.status_code == 422


async def test_a_change_still_in_flight_is_numbered_after_it_commits(sluice: Running) -> None:
    """A reader passing while a write is uncommitted must not skip it: the write gets a feed
    position above the reader's cursor once it commits."""
    first = await create(sluice, notes="first")
    feed = (await sluice.client.get("/v1/orders", params={"since": 0}, headers=sluice.headers())).json()
    cursor = feed["next_since"]
    assert [o["id"] for o in feed["items"]] == [first["id"]]

    async with sluice.state.sessionmaker() as writer:
        order = await writer.get(Order, uuid.UUID(first["id"]), with_for_update=True)
        assert order is not None
        order.notes, order.version, order.change_seq = "in flight", 2, None
        await writer.flush()
        # Meanwhile another order commits and the reader moves its cursor past it.
        later = await create(sluice, notes="later")
        page = (
            await sluice.client.get("/v1/orders", params={"since": cursor}, headers=sluice.headers())
        ).json()
        assert [o["id"] for o in page["items"]] == [later["id"]]
        cursor = page["next_since"]
        await writer.commit()

    page = (await sluice.client.get("/v1/orders", params={"since": cursor}, headers=sluice.headers())).json()
    assert [(o["id"], o["notes"]) for o in page["items"]] == [(first["id"], "in flight")]
    assert page["next_since"] > cursor


async def test_a_second_acknowledgement_of_the_same_version_changes_nothing(sluice: Running) -> None:
    """Two answers to the same pushed version (two pushes crossing, or the feed first): the
    second must not be taken as a transition from ST_OK (the seed's table calls that an error)."""
    order = await create(sluice, notes="acked twice")
    order_id = uuid.UUID(order["id"])
    answer = SyncAnswer(state="ST_OK", ack_version=1, order=None)
    for _ in range(2):
        async with sluice.state.sessionmaker() as session:
            await acknowledge_batch(session, [(order_id, 1, answer)])
    held = (await sluice.client.get(f"/v1/orders/{order_id}", headers=sluice.headers())).json()
    assert held["sync_state"] == "ST_OK"
