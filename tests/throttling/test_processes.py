"""Enforcement across real processes: two Sluice replicas (one Redis, one database) driven as
fast as they go against the sandbox partner, which records when each call arrives."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.airlock.test_processes import sluice_env, start_sluice
from tests.conftest import ADMIN_KEY, Sandbox, new_redis_prefix
from tests.support import stop_process
from tests.throttling.conftest import BASE, headers

LIMIT = 200
LOAD_SECONDS = 5.0
CONCURRENCY_PER_REPLICA = 32


def worst_window(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """The most arrivals in any window (t - width, t] (two pointers over sorted times), and
    where that window ends."""
    worst, at, start = 0, 0.0, 0
    for end, moment in enumerate(times):
        while times[start] <= moment - width:
            start += 1
        if end - start + 1 > worst:
            worst, at = end - start + 1, moment
    return worst, at


async def drive(url: str, stop_at: float) -> dict[int, int]:
    """Call GET /v1/products as fast as the replica answers until `stop_at`; count statuses."""
    counts: dict[int, int] = {}
    hdrs = {"X-API-Key": ADMIN_KEY, "X-Client-ID": "load", "X-Language-ID": "en"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one_client() -> None:
            while time.time() < stop_at:
                response = await client.get("/v1/products", headers=hdrs)
                counts[response.status_code] = counts.get(response.status_code, 0) + 1

        await asyncio.gather(*(one_client() for _ in range(CONCURRENCY_PER_REPLICA)))
    return counts


async def test_two_replicas_keep_the_limit_together(
    database_url: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    # Replicas of one deployment share the database, Redis and the key prefix.
    # The margin absorbs the jitter between a slot and the call's arrival at the partner. On this
    # shared two-core machine, with both replicas, the partner, the load and the databases on it,
    # the OS deschedules any of them for a few ms at times: 201 calls took down to 1.0025 s
    # where the default margin (0.75 %) spaces them over 1.0076 s, and one run in ~12 put 201 in
    # a second. 1.25 % leaves 12 ms and keeps the rate within the 2 % asked.
    env = sluice_env(
        database_url, sandbox, REDIS_KEY_PREFIX=new_redis_prefix(), THROTTLE_SAFETY_MARGIN="0.0125"
    )
    env.pop("AIRLOCK_POLL_INTERVAL")
    a, a_url = start_sluice({**env, "INSTANCE_NAME": "a"}, tmp_path / "a.log")
    b, b_url = start_sluice({**env, "INSTANCE_NAME": "b"}, tmp_path / "b.log")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            body: dict[str, Any] = {
                "name": "sandbox partner",
                "urlPattern": f"{sandbox.url}/v2/*",
                "methods": ["GET"],
                "maxThroughput": LIMIT,
            }
            created = await http.post(f"{a_url}{BASE}/throttlingConfigs", json=body, headers=headers())
            assert created.status_code == 200, created.text
            uid = created.json()["uid"]
            deployed = await http.post(f"{a_url}{BASE}/throttlingConfigs/{uid}/deploy", headers=headers())
            assert deployed.status_code == 200, deployed.text
            # Deployed on A: B enforces it within a second.
            started = time.monotonic()
            while not (await http.get(f"{b_url}/v1/throttling/runtime", headers=headers())).json()["rules"]:
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.02)

            load_start = time.time()
            stop_at = load_start + LOAD_SECONDS
            results = await asyncio.gather(drive(a_url, stop_at), drive(b_url, stop_at))
            arrivals = (
                await sandbox.http.get("/_sandbox/arrivals", params={"route": "GET /v2/product-list"})
            ).json()
            times = sorted(t for t in arrivals["GET /v2/product-list"] if t >= load_start)

            # An update on A is enforced by B in under a second.
            update = {**body, "maxThroughput": 350}
            changed = time.monotonic()
            response = await http.put(
                f"{a_url}{BASE}/throttlingConfigs/{uid}", json=update, headers=headers()
            )
            assert response.status_code == 200
            while True:
                rules = (await http.get(f"{b_url}/v1/throttling/runtime", headers=headers())).json()["rules"]
                if rules[0]["maxThroughput"] == 350:
                    break
                assert time.monotonic() - changed < 1.0, rules
                await asyncio.sleep(0.02)
    finally:
        stop_process(a)
        stop_process(b)

    # Both replicas really sent calls (the limit is shared, not per replica).
    for counts in results:
        assert counts.get(200, 0) > 100, results
        assert set(counts) <= {200, 429}, results
    # No one-second window above the limit, anywhere in the run.
    worst, at = worst_window(times)
    assert worst <= LIMIT, (worst, f"window ending {at - load_start:.3f} s into the run")
    # The sustained rate, away from the start and the end, is the limit (±2 %).
    steady = [t for t in times if load_start + 1.0 <= t < stop_at - 0.5]
    span = stop_at - 0.5 - (load_start + 1.0)
    rate = len(steady) / span
    assert LIMIT * 0.98 <= rate <= LIMIT * 1.02, (rate, len(times))
