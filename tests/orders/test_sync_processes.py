"""Two real Sluice processes, A and B, on two databases, syncing their orders with each other
over their HTTP APIs. Rounds are run on demand (POST /v1/sync/run) so that each step is
deterministic; the loop itself runs in the outage test."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx

from tests.conftest import ADMIN_KEY
from tests.orders.conftest import Instance
from tests.orders.test_api import order_body

HEADERS = {"X-API-Key": ADMIN_KEY}


async def sync_round(http: httpx.AsyncClient, instance: Instance) -> dict[str, Any]:
    response = await http.post(f"{instance.url}/v1/sync/run", headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def read(http: httpx.AsyncClient, instance: Instance, order_id: str) -> dict[str, Any]:
    response = await http.get(
        f"{instance.url}/v1/orders/{order_id}", params={"include_deleted": "true"}, headers=HEADERS
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def put(
    http: httpx.AsyncClient, instance: Instance, order: dict[str, Any], **changes: Any
) -> dict[str, Any]:
    current = {k: order[k] for k in ("customer", "lines", "currency", "status", "notes")}
    body = order_body(**{**current, **changes})
    response = await http.put(
        f"{instance.url}/v1/orders/{order['id']}",
        json=body,
        headers={**HEADERS, "If-Match": f'"{order["version"]}"'},
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def create(http: httpx.AsyncClient, instance: Instance, **changes: Any) -> dict[str, Any]:
    response = await http.post(f"{instance.url}/v1/orders", json=order_body(**changes), headers=HEADERS)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def content(order: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        order[k]
        for k in (
            "id",
            "number",
            "customer",
            "lines",
            "currency",
            "total",
            "status",
            "notes",
            "version",
            "deleted",
        )
    )


async def everything(http: httpx.AsyncClient, instance: Instance) -> dict[str, dict[str, Any]]:
    orders: dict[str, dict[str, Any]] = {}
    since = 0
    while True:
        page = (
            await http.get(
                f"{instance.url}/v1/orders", params={"since": since, "limit": 500}, headers=HEADERS
            )
        ).json()
        for order in page["items"]:
            orders[order["id"]] = order
        if not page["items"]:
            return orders
        since = page["next_since"]


async def test_an_order_made_and_changed_on_b_appears_on_a_and_back(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    async with httpx.AsyncClient(timeout=30) as http:
        before = (await http.get(f"{b.url}/v1/sync/status", headers=HEADERS)).json()["pushed_total"]
        order = await create(http, b, notes="made on B")
        order = await put(http, b, order, status="confirmed", notes="changed on B")
        result = await sync_round(http, b)
        assert result["pushed"] == 1  # one write across for the order, whatever its history here
        on_a = await read(http, a, order["id"])
        assert content(on_a) == content(await read(http, b, order["id"]))
        assert on_a["status"] == "confirmed" and on_a["changed_by"] == "b" and on_a["origin"] == "b"
        assert on_a["sync_state"] == "ST_OK"
        assert (await read(http, b, order["id"]))["sync_state"] == "ST_OK"

        # No echo: A's round reads B's feed and sends nothing back.
        result = await sync_round(http, a)
        assert result["pushed"] == 0
        assert (await sync_round(http, b))["pushed"] == 0
        assert (await http.get(f"{b.url}/v1/sync/status", headers=HEADERS)).json()[
            "pushed_total"
        ] == before + 1

        # An edit on A appears on B.
        edited = await put(http, a, on_a, notes="edited on A")
        assert edited["version"] == 3 and edited["sync_state"] == "ST_UPD"
        await sync_round(http, a)
        on_b = await read(http, b, order["id"])
        assert on_b["notes"] == "edited on A" and on_b["version"] == 3 and on_b["sync_state"] == "ST_OK"
        assert (await read(http, a, order["id"]))["sync_state"] == "ST_OK"

        # A delete on B reaches A as a tombstone.
        deleted = await http.delete(f"{b.url}/v1/orders/{order['id']}", headers=HEADERS)
        assert deleted.json()["sync_state"] == "ST_DEL"
        await sync_round(http, b)
        on_a = await read(http, a, order["id"])
        assert on_a["deleted"] is True and on_a["sync_state"] == "ST_DEL_SYNCED"
        assert (await read(http, b, order["id"]))["sync_state"] == "ST_DEL_SYNCED"
        assert (await http.get(f"{a.url}/v1/orders/{order['id']}", headers=HEADERS)).status_code == 404


async def test_the_feed_brings_changes_before_the_peer_pushes(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    async with httpx.AsyncClient(timeout=30) as http:
        order = await create(http, b, notes="pulled")
        # A pulls B's feed: it has the order before B pushed anything.
        await sync_round(http, a)
        assert (await read(http, a, order["id"]))["notes"] == "pulled"
        # B then finds its own change in A's feed, held at its version: that is the
        # acknowledgement, and B has nothing to write across.
        result = await sync_round(http, b)
        assert result["pushed"] == 0
        assert (await read(http, b, order["id"]))["sync_state"] == "ST_OK"


async def test_concurrent_edits_collide_on_both_sides_and_a_resolution_syncs(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    async with httpx.AsyncClient(timeout=30) as http:
        order = await create(http, a, notes="shared")
        await sync_round(http, a)
        on_b = await read(http, b, order["id"])
        # Both sides change version 1 before either hears of the other.
        mine = await put(http, a, order, notes="A's edit")
        theirs = await put(http, b, on_b, notes="B's edit")
        assert mine["version"] == theirs["version"] == 2
        await sync_round(http, a)
        await sync_round(http, b)
        on_a, on_b = await read(http, a, order["id"]), await read(http, b, order["id"])
        assert on_a["sync_state"] == on_b["sync_state"] == "ST_COLLISION"
        # Nothing overwritten: each side still has its own edit.
        assert (on_a["notes"], on_b["notes"]) == ("A's edit", "B's edit")
        # Editing a collided order is refused until it is resolved.
        refused = await http.put(
            f"{a.url}/v1/orders/{order['id']}", json=order_body(), headers={**HEADERS, "If-Match": '"2"'}
        )
        assert refused.status_code == 409

        # B takes A's version; the resolution reaches A.
        resolved = await http.post(
            f"{b.url}/v1/orders/{order['id']}/resolve", json={"take": "remote"}, headers=HEADERS
        )
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["notes"] == "A's edit" and resolved.json()["version"] == 3
        await sync_round(http, b)
        on_a, on_b = await read(http, a, order["id"]), await read(http, b, order["id"])
        assert on_a["sync_state"] == on_b["sync_state"] == "ST_OK"
        assert content(on_a) == content(on_b) and on_a["notes"] == "A's edit"

        # A merged edit, from the other side this time.
        mine = await put(http, a, on_a, notes="A again")
        theirs = await put(http, b, on_b, notes="B again")
        await sync_round(http, b)  # B finds A's edit in A's feed: a collision on B
        await sync_round(http, a)  # A's push meets B's collision: a collision on A
        on_a, on_b = await read(http, a, order["id"]), await read(http, b, order["id"])
        assert on_a["sync_state"] == on_b["sync_state"] == "ST_COLLISION"
        merged_body = {"take": "merged", "order": order_body(notes="A and B, merged")}
        merged = await http.post(
            f"{a.url}/v1/orders/{order['id']}/resolve", json=merged_body, headers=HEADERS
        )
        assert merged.status_code == 200, merged.text
        await sync_round(http, a)
        on_a, on_b = await read(http, a, order["id"]), await read(http, b, order["id"])
        assert on_b["notes"] == "A and B, merged" and content(on_a) == content(on_b)
        assert on_a["sync_state"] == on_b["sync_state"] == "ST_OK"


async def test_outage_and_a_push_interrupted_mid_batch_lose_nothing(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    async with httpx.AsyncClient(timeout=60) as http:
        # B is down: A's round fails and says so; A keeps working.
        b.stop()
        made_on_a = [await create(http, a, notes=f"during outage {i}") for i in range(120)]
        failed = await http.post(f"{a.url}/v1/sync/run", headers=HEADERS)
        assert failed.status_code == 503
        status = (await http.get(f"{a.url}/v1/sync/status", headers=HEADERS)).json()
        assert status["last_error"] and status["pending_push"] >= 120
        b.start()
        made_on_b = [await create(http, b, notes=f"on B {i}") for i in range(30)]

        # A push of 120 orders, its peer killed in the middle of it.
        push = asyncio.create_task(http.post(f"{a.url}/v1/sync/run", headers=HEADERS))
        await asyncio.sleep(0.3)
        b.kill()
        response = await push
        assert response.status_code in (200, 503)
        b.start()

        # Rounds until both sides have nothing left to send.
        deadline = time.monotonic() + 60
        while True:
            await sync_round(http, a)
            await sync_round(http, b)
            pending = [
                (await http.get(f"{x.url}/v1/sync/status", headers=HEADERS)).json()["pending_push"]
                for x in (a, b)
            ]
            if pending == [0, 0]:
                break
            assert time.monotonic() < deadline, pending

        on_a, on_b = await everything(http, a), await everything(http, b)
        assert set(on_a) == set(on_b)
        assert {o["id"] for o in made_on_a + made_on_b} <= set(on_a)
        assert all(content(on_a[i]) == content(on_b[i]) for i in on_a)
        states = {o["sync_state"] for o in [*on_a.values(), *on_b.values()]}
        assert states <= {"ST_OK", "ST_DEL_SYNCED", "ST_COLLISION"}, states


async def test_status_shows_the_lag_both_ways(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    async with httpx.AsyncClient(timeout=60) as http:
        await sync_round(http, a)
        await sync_round(http, b)
        made = [await create(http, a, notes=f"lag {i}") for i in range(3)]
        await asyncio.sleep(0.2)
        lag = (await http.get(f"{a.url}/v1/sync/status", headers=HEADERS)).json()["lag"]
        assert lag["push_pending"] == 3 and lag["oldest_pending_seconds"] >= 0.2
        # B reads one page of A's feed (a page holds one order here): the rest is behind.
        page = (await http.get(f"{a.url}/v1/orders", params={"since": 0, "limit": 1}, headers=HEADERS)).json()
        assert page["head"] > page["next_since"]
        await sync_round(http, a)
        lag = (await http.get(f"{a.url}/v1/sync/status", headers=HEADERS)).json()["lag"]
        assert lag["push_pending"] == 0 and lag["oldest_pending_seconds"] == 0
        assert 0 <= lag["seconds_since_success"] < 30
        await sync_round(http, b)
        status = (await http.get(f"{b.url}/v1/sync/status", headers=HEADERS)).json()
        assert status["lag"]["pull_behind"] == 0 and status["cursor"] > 0
        for order in made:
            assert (await read(http, b, order["id"]))["notes"] == order["notes"]


async def test_orders_the_peer_refuses_do_not_hold_the_others_back(pair: tuple[Instance, Instance]) -> None:
    """More orders than a push step carries are refused by the peer (as after a version skew:
    stored here, not valid there): the good ones made after them still go, within rounds."""
    a, b = pair
    dsn = a.env["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    async with httpx.AsyncClient(timeout=60) as http:
        await sync_round(http, a)
        await sync_round(http, b)
        bad = [await create(http, a, notes=f"refused {i}") for i in range(110)]
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE orders SET currency = 'XXQ' WHERE id = ANY($1::uuid[])", [o["id"] for o in bad]
            )
            good = [await create(http, a, notes=f"good {i}") for i in range(5)]
            for _ in range(3):
                await sync_round(http, a)
            for order in good:
                assert (await read(http, b, order["id"]))["notes"] == order["notes"]
            refused = await conn.fetch(
                "SELECT sync_state, sync_error FROM orders WHERE id = ANY($1::uuid[])", [o["id"] for o in bad]
            )
            assert all(r["sync_state"] == 1 and "currency" in r["sync_error"] for r in refused)
            missing = await http.get(f"{b.url}/v1/orders/{bad[0]['id']}", headers=HEADERS)
            assert missing.status_code == 404
        finally:
            # Leave the pair as it was for the other tests.
            await conn.execute("DELETE FROM orders WHERE id = ANY($1::uuid[])", [o["id"] for o in bad])
            await conn.close()
