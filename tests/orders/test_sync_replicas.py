"""Two replicas of instance A (one database, one Redis) and their peer B, as real processes:
the replicas run their sync rounds one at a time under a Redis lease, so nothing is pushed twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import fresh_database, new_redis_prefix
from tests.orders.conftest import Instance, instance_env, wait_for_first_round
from tests.orders.test_sync_processes import HEADERS, create
from tests.support import free_port


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance, Instance]]:
    logs = tmp_path_factory.mktemp("sync-replicas")
    with fresh_database("sluice_sync_ra") as db_a, fresh_database("sluice_sync_rb") as db_b:
        url_a1, url_a2, url_b = (f"http://127.0.0.1:{free_port()}" for _ in range(3))
        prefix_a = new_redis_prefix()

        # Small batches: a round takes many steps, long enough for the other replica's request
        # to arrive while it runs.
        small = {"SYNC_BATCH_SIZE": "10", "SYNC_PUSH_CONCURRENCY": "1", "SYNC_ROUND_STEPS": "1000"}
        a1 = Instance("a1", url_a1, instance_env("a", db_a, url_b, prefix_a, **small), logs / "a1.log")
        a2 = Instance("a2", url_a2, instance_env("a", db_a, url_b, prefix_a, **small), logs / "a2.log")
        b = Instance("b", url_b, instance_env("b", db_b, url_a1, **small), logs / "b.log")
        for instance in (a1, a2, b):
            instance.start()
        for instance in (a1, a2, b):
            wait_for_first_round(instance)
        try:
            yield a1, a2, b
        finally:
            for instance in (a1, a2, b):
                instance.stop()


async def test_two_replicas_asked_to_sync_at_once_push_each_order_once(
    trio: tuple[Instance, Instance, Instance],
) -> None:
    a1, a2, b = trio
    async with httpx.AsyncClient(timeout=120) as http:
        before = (await http.get(f"{a1.url}/v1/sync/status", headers=HEADERS)).json()["pushed_total"]
        made = [await create(http, a1, notes=f"replica test {i}") for i in range(150)]
        first, second = await asyncio.gather(
            http.post(f"{a1.url}/v1/sync/run", headers=HEADERS),
            http.post(f"{a2.url}/v1/sync/run", headers=HEADERS),
        )
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        # One of them did the round; the other waited for the lease and found nothing left.
        pushed = sorted([first.json()["pushed"], second.json()["pushed"]])
        assert pushed == [0, 150]
        after = (await http.get(f"{a1.url}/v1/sync/status", headers=HEADERS)).json()
        assert after["pushed_total"] - before == 150 and after["pending_push"] == 0
        for order in made[::30]:
            held = await http.get(f"{b.url}/v1/orders/{order['id']}", headers=HEADERS)
            assert held.status_code == 200 and held.json()["sync_state"] == "ST_OK"
