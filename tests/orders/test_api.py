"""The Orders API: creation (idempotent), conditional updates, tombstones, lists, the change feed."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

from tests.conftest import Running


def order_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "lines": [
            {"sku": "PLN20", "name": "Prepaid 20", "quantity": 2, "unit_price": "10.25"},
            {"sku": "PLN50", "name": "Prepaid 50", "quantity": 1, "unit_price": "4.5"},
        ],
        "currency": "eur",
        "notes": "",
    }
    body.update(changes)
    return body


async def create(sluice: Running, **changes: Any) -> dict[str, Any]:
    response = await sluice.client.post("/v1/orders", json=order_body(**changes), headers=sluice.headers())
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_create_read_update_delete(sluice: Running) -> None:
    response = await sluice.client.post("/v1/orders", json=order_body(), headers=sluice.headers())
    assert response.status_code == 201, response.text
    order = response.json()
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"/v1/orders/{order['id']}"
    assert order["total"] == "25.00" and order["currency"] == "EUR"
    assert order["status"] == "new" and order["version"] == 1 and order["deleted"] is False
    assert order["sync_state"] == "ST_NEW" and order["origin"] == sluice.state.settings.instance_name
    assert order["lines"][1]["unit_price"] == "4.5"
    url = f"/v1/orders/{order['id']}"

    read = await sluice.client.get(url, headers=sluice.headers())
    assert read.status_code == 200 and read.headers["etag"] == '"1"' and read.json() == order

    changed = order_body(status="confirmed", notes="call first")
    missing = await sluice.client.put(url, json=changed, headers=sluice.headers())
    assert missing.status_code == 428 and missing.json()["code"] == "precondition_required"
    stale = await sluice.client.put(url, json=changed, headers=sluice.headers(**{"If-Match": '"7"'}))
    assert stale.status_code == 412 and stale.json()["current_version"] == 1
    assert stale.headers["etag"] == '"1"'
    updated = await sluice.client.put(url, json=changed, headers=sluice.headers(**{"If-Match": '"1"'}))
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2 and updated.json()["status"] == "confirmed"
    assert updated.headers["etag"] == '"2"'
    # Never acknowledged by a peer: still new to it.
    assert updated.json()["sync_state"] == "ST_NEW"
    # Feed positions are handed out when the feed is read, in commit order.
    assert order["change_seq"] is None and updated.json()["change_seq"] is None
    feed = (await sluice.client.get("/v1/orders", params={"since": 0}, headers=sluice.headers())).json()
    [fed] = [o for o in feed["items"] if o["id"] == order["id"]]
    assert fed["version"] == 2 and fed["change_seq"] == feed["next_since"]
    # The same content again is not a change.
    again = await sluice.client.put(url, json=changed, headers=sluice.headers(**{"If-Match": '"2"'}))
    assert again.json()["version"] == 2

    stale_delete = await sluice.client.delete(url, headers=sluice.headers(**{"If-Match": '"1"'}))
    assert stale_delete.status_code == 412
    deleted = await sluice.client.delete(url, headers=sluice.headers())
    assert deleted.status_code == 200
    assert deleted.json()["deleted"] is True and deleted.json()["version"] == 3
    assert deleted.json()["sync_state"] == "ST_DEL"
    assert (await sluice.client.get(url, headers=sluice.headers())).status_code == 404
    tombstone = await sluice.client.get(url, params={"include_deleted": "true"}, headers=sluice.headers())
    assert tombstone.status_code == 200 and tombstone.json()["deleted"] is True
    gone = await sluice.client.put(url, json=changed, headers=sluice.headers(**{"If-Match": "*"}))
    assert gone.status_code == 404


async def test_post_with_an_existing_id_is_idempotent(sluice: Running) -> None:
    order_id = str(uuid.uuid4())
    first = await sluice.client.post("/v1/orders", json=order_body(id=order_id), headers=sluice.headers())
    second = await sluice.client.post("/v1/orders", json=order_body(id=order_id), headers=sluice.headers())
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    other = await sluice.client.post(
        "/v1/orders", json=order_body(id=order_id, notes="something else"), headers=sluice.headers()
    )
    assert other.status_code == 409 and other.json()["code"] == "conflict"


async def test_bad_orders_are_refused_with_422(sluice: Running) -> None:
    line = {"sku": "X", "name": "x", "quantity": 1, "unit_price": "1.00"}
    cases = [
        order_body(lines=[{**line, "quantity": 0}]),
        order_body(lines=[{**line, "unit_price": "-1"}]),
        order_body(lines=[{**line, "unit_price": "NaN"}]),
        order_body(lines=[]),
        order_body(currency="XXX"),
        # A total beyond NUMERIC(18, 4), with each line valid on its own.
        order_body(lines=[{**line, "quantity": 1_000_000, "unit_price": "999999999999"}]),
        order_body(customer={"name": "A", "email": "not-an-email"}),
        order_body(status="lost"),
        order_body(unknown=1),
        {"customer": {"name": "A", "email": "a@example.com"}},
    ]
    for body in cases:
        response = await sluice.client.post("/v1/orders", json=body, headers=sluice.headers())
        assert response.status_code == 422, (body, response.text)
        assert response.json()["code"] == "validation_error"
    not_json = await sluice.client.post(
        "/v1/orders", content=b"{", headers=sluice.headers(**{"Content-Type": "application/json"})
    )
    assert not_json.status_code in (400, 422)
    assert (await sluice.client.get("/v1/orders/not-a-uuid", headers=sluice.headers())).status_code == 422
    assert (
        await sluice.client.get("/v1/orders", params={"cursor": "%%%"}, headers=sluice.headers())
    ).status_code == 400
    assert (await sluice.client.get("/v1/orders")).status_code == 401
    # Beyond the feed's BIGINT positions; a cursor without its time's offset.
    assert (
        await sluice.client.get("/v1/orders", params={"since": 2**64}, headers=sluice.headers())
    ).status_code == 422
    naive = base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{uuid.uuid4()}".encode()).decode()
    assert (
        await sluice.client.get("/v1/orders", params={"cursor": naive}, headers=sluice.headers())
    ).status_code == 400


async def test_a_nul_character_is_refused_with_422_not_a_500(sluice: Running) -> None:
    """PostgreSQL stores no NUL (U+0000) in text: such a value is the client's error."""
    for body in (
        order_body(notes="before\u0000after"),
        order_body(customer={"name": "Ada\u0000", "email": "ada@example.com"}),
    ):
        response = await sluice.client.post("/v1/orders", json=body, headers=sluice.headers())
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "validation_error"
        assert "NUL" in response.json()["detail"]
    created = await create(sluice)
    edit = {**order_body(), "notes": "\u0000"}
    response = await sluice.client.put(
        f"/v1/orders/{created['id']}", json=edit, headers=sluice.headers(**{"If-Match": '"1"'})
    )
    assert response.status_code == 422, response.text
    # Nothing was half-written: the order is as it was.
    assert (await sluice.client.get(f"/v1/orders/{created['id']}", headers=sluice.headers())).json()[
        "version"
    ] == 1


async def test_list_filters_and_cursor_pagination(sluice: Running) -> None:
    made = [await create(sluice, notes=str(i), status="paid" if i % 2 else "new") for i in range(7)]
    await create(sluice, customer={"name": "Grace Hopper", "email": "grace@example.com"}, currency="USD")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "email": "ada@example.com"}
        if cursor:
            params["cursor"] = cursor
        page = (await sluice.client.get("/v1/orders", params=params, headers=sluice.headers())).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [o["id"] for o in reversed(made)]  # newest first, each once
    paid = (await sluice.client.get("/v1/orders", params={"status": "paid"}, headers=sluice.headers())).json()
    assert len(paid["items"]) == 3
    usd = (await sluice.client.get("/v1/orders", params={"currency": "usd"}, headers=sluice.headers())).json()
    assert [o["customer"]["name"] for o in usd["items"]] == ["Grace Hopper"]
    q = (await sluice.client.get("/v1/orders", params={"q": "grace"}, headers=sluice.headers())).json()
    assert len(q["items"]) == 1


async def test_change_feed_is_in_commit_order_and_misses_nothing_under_concurrent_writes(
    sluice: Running,
) -> None:
    """Writers create and change orders concurrently while a reader follows the feed from its
    cursor: every change is read, in order of position, none skipped."""
    done = asyncio.Event()
    read: list[tuple[str, int, int]] = []

    async def follow() -> None:
        since = 0
        while True:
            finished = done.is_set()
            page = (
                await sluice.client.get(
                    "/v1/orders", params={"since": since, "limit": 7}, headers=sluice.headers()
                )
            ).json()
            read.extend((o["id"], o["version"], o["change_seq"]) for o in page["items"])
            since = page["next_since"]
            if finished and not page["items"]:
                return

    async def writer(n: int) -> None:
        order = await create(sluice, notes=f"w{n}")
        url = f"/v1/orders/{order['id']}"
        for version in range(1, 4):
            body = order_body(notes=f"w{n} v{version + 1}")
            response = await sluice.client.put(
                url, json=body, headers=sluice.headers(**{"If-Match": f'"{version}"'})
            )
            assert response.status_code == 200, response.text

    reader = asyncio.create_task(follow())
    await asyncio.gather(*(writer(n) for n in range(12)))
    done.set()
    await reader
    positions = [seq for _, _, seq in read]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    # Each order's last version was read (earlier ones may be superseded before the reader came).
    last = {}
    for order_id, version, _ in read:
        last[order_id] = max(version, last.get(order_id, 0))
    assert len(last) == 12 and set(last.values()) == {4}
    # Tombstones are in the feed.
    some = read[-1][0]
    await sluice.client.delete(f"/v1/orders/{some}", headers=sluice.headers())
    tail = (
        await sluice.client.get("/v1/orders", params={"since": positions[-1]}, headers=sluice.headers())
    ).json()
    assert [(o["id"], o["deleted"]) for o in tail["items"]] == [(some, True)]
