"""The limiter in one process: GCRA spacing on real Redis, 429, waiting, and the airlock queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.airlock.models import AsyncCall, AsyncCallLog, CallStatus
from app.throttling import worker as throttling_worker
from app.throttling.limiter import THROTTLED
from app.upstream.client import UpstreamExchange
from tests.airlock.conftest import Clock
from tests.conftest import REDIS_URL, Running, Sandbox
from tests.support import Receiver
from tests.throttling.conftest import BASE, ORG, create, deploy, headers

PURCHASE = {"product_code": "PLN50", "customer_number": "0812345678", "ref_id": "thr-1"}


async def deploy_limit(sluice: Running, sandbox: Sandbox, limit: int, methods: list[str]) -> str:
    body = {"urlPattern": f"{sandbox.url}/v2/*", "methods": methods, "maxThroughput": limit}
    uid: str = (await create(sluice.client, body))["uid"]
    await deploy(sluice.client, uid)
    return uid


async def arrivals(sandbox: Sandbox, route: str) -> list[float]:
    return sorted((await sandbox.http.get("/_sandbox/arrivals", params={"route": route})).json()[route])


async def test_gcra_spaces_slots_and_refuses_beyond_the_horizon(airlock: Running, sandbox: Sandbox) -> None:
    uid = await deploy_limit(airlock, sandbox, 200, ["GET"])
    gate = airlock.state.throttle
    [rule] = gate.rules[ORG]
    assert rule.uid == uid
    slots = []
    for _ in range(20):
        reserved, wait_us, now_us = await gate._script(
            keys=[gate.slot_key(rule)], args=[f"{rule.interval_us:.3f}", 10**7]
        )
        assert int(reserved) == 1
        slots.append(int(now_us) + int(wait_us))
    # Back-to-back reservations get slots exactly one interval apart on Redis's clock.
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(abs(gap - rule.interval_us) <= 1 for gap in gaps), gaps
    # A caller whose horizon is shorter than the next slot is refused, and reserves nothing.
    before = await airlock.state.redis.get(gate.slot_key(rule))
    reserved, _, _ = await gate._script(keys=[gate.slot_key(rule)], args=[f"{rule.interval_us:.3f}", 0])
    assert int(reserved) == 0
    assert await airlock.state.redis.get(gate.slot_key(rule)) == before


async def test_concurrent_callers_share_script_calls_and_keep_their_spacing(
    airlock: Running, sandbox: Sandbox
) -> None:
    await deploy_limit(airlock, sandbox, 1000, ["GET"])
    gate = airlock.state.throttle
    [rule] = gate.rules[ORG]
    # Several slots in one call: consecutive, within the horizon only (one-second slots here,
    # so that the few microseconds between the calls do not matter).
    probe = gate.slot_key(rule) + ":probe"
    reserved, wait_us, _ = await gate._script(keys=[probe], args=["1000000", 10**7, 5])
    assert (int(reserved), int(wait_us)) == (5, 0)
    reserved, wait_us, _ = await gate._script(keys=[probe], args=["1000000", 12_500_000, 20])
    assert int(reserved) == 8  # the slots 5, 6 ... 12 s from the first: within 12.5 s
    assert 4_900_000 < int(wait_us) <= 5_000_000

    script_calls = 0
    script = gate._script

    async def counted(**kwargs: Any) -> Any:
        nonlocal script_calls
        script_calls += 1
        return await script(**kwargs)

    gate._script = counted
    gate._coalescers.clear()
    exchange = UpstreamExchange(org_id=ORG)
    released: list[float] = []

    async def call() -> None:
        await gate.admit("GET", f"{sandbox.url}/v2/product-list", exchange)
        released.append(time.time())

    await asyncio.gather(*(call() for _ in range(100)))
    # 100 concurrent callers: a handful of script calls, not one each.
    assert script_calls < 20, script_calls
    # Every caller still went at its own slot: 100 slots take ~99 intervals.
    released.sort()
    assert released[-1] - released[0] >= 99 * rule.interval_us / 1e6 * 0.9


async def test_calls_wait_for_their_slot_then_429_beyond_the_wait(start_app: Any, sandbox: Sandbox) -> None:
    async with start_app(run_workers=False, throttle_max_wait=0.25) as sluice:
        await deploy_limit(sluice, sandbox, 200, ["GET"])
        started = time.time()
        responses = await asyncio.gather(
            *(sluice.client.get("/v1/products", headers=sluice.headers()) for _ in range(120))
        )
    statuses = [r.status_code for r in responses]
    passed = statuses.count(200)
    # 0.25 s of waiting at ~199 calls/s: about 50 calls get a slot; the rest are refused at once.
    assert 40 <= passed <= 60, statuses
    assert set(statuses) == {200, 429}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["code"] == "throttled"
    assert int(refused.headers["retry-after"]) >= 1
    times = [t for t in await arrivals(sandbox, "GET /v2/product-list") if t >= started]
    # Only the admitted calls reached the partner, spread over their slots (a burst would take
    # a few milliseconds; the first ones may leave late while the loop admits the others).
    assert len(times) == passed
    assert times[-1] - times[0] >= (passed - 1) / 200 * 0.75


async def test_unmatched_calls_are_not_throttled(start_app: Any, sandbox: Sandbox) -> None:
    async with start_app(run_workers=False, throttle_max_wait=0.0) as sluice:
        # Only POSTs are covered: GETs pass whatever the rate.
        await deploy_limit(sluice, sandbox, 200, ["POST"])
        responses = await asyncio.gather(
            *(sluice.client.get("/v1/products", headers=sluice.headers()) for _ in range(60))
        )
    assert {r.status_code for r in responses} == {200}


@pytest.mark.parametrize("margin", [0.1, 0.0])
async def test_throttled_call_with_reply_is_queued_at_its_slot_and_run_then(
    start_app: Any,
    sandbox: Sandbox,
    receiver: Receiver,
    clock: Clock,
    make_worker: Any,
    margin: float,
) -> None:
    # Here the app, the worker, the sandbox and the receiver share one event loop, which often
    # resumes a call 5-25 ms after its slot: a wider margin keeps such calls from giving their
    # slots up (a late call takes a new slot, and with no wait allowed, is queued again). With no
    # margin at all no slot is given up for lateness: the queued calls go at theirs too.
    settings = dict(
        run_workers=False,
        reply_url_allow_loopback=True,
        throttle_max_wait=0.0,
        throttle_safety_margin=margin,
    )
    async with start_app(**settings) as sluice:
        await deploy_limit(sluice, sandbox, 200, ["POST"])
        queued_before = THROTTLED.labels(sluice.state.throttle.rules[ORG][0].uid, "queued")._value.get()
        bodies = [{**PURCHASE, "ref_id": f"thr-{i}", "$reply": f"{receiver.url}/r"} for i in range(30)]
        started = time.time()
        responses = await asyncio.gather(
            *(sluice.client.post("/v1/purchases", json=b, headers=sluice.headers()) for b in bodies)
        )
        statuses = sorted(r.status_code for r in responses)
        # The first slot is free (no wait): that call may go now (unless the loop, busy admitting
        # the others, resumed it too late for it); the others hold later slots.
        assert set(statuses) <= {201, 202} and statuses.count(202) >= 25, statuses
        async with sluice.state.sessionmaker() as session:
            calls = (await session.scalars(select(AsyncCall).order_by(AsyncCall.throttle_slot))).all()
        assert len(calls) == statuses.count(202)
        slots = [c.throttle_slot for c in calls]
        assert all(s is not None for s in slots)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]  # type: ignore[operator]
        assert all(g >= 0.004 for g in gaps), gaps
        assert all(c.status == CallStatus.CALL_RETRY and c.attempts == 0 for c in calls)
        assert all(c.next_try < c.throttle_slot for c in calls)  # type: ignore[operator]
        counts = await throttling_worker.count_queued(sluice.state)
        assert sum(counts.values()) == len(calls)
        assert THROTTLED.labels(calls[0].throttle_uid, "queued")._value.get() - queued_before == len(calls)

        # The worker takes them (a little early) and each goes at its own slot.
        worker = make_worker(sluice.state)
        while True:
            async with sluice.state.sessionmaker() as session:
                pending = await session.scalar(
                    select(AsyncCall.id).where(AsyncCall.status != CallStatus.DONE).limit(1)
                )
            if pending is None:
                break
            await worker.run_once()
            assert time.time() - started < 20
        times = [t for t in await arrivals(sandbox, "POST /v2/order") if t >= started]
        assert len(times) == 30
        window = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        assert window <= 200
        async with sluice.state.sessionmaker() as session:
            done = (await session.scalars(select(AsyncCall))).all()
        assert all(c.status == CallStatus.DONE and c.throttle_slot is None for c in done)
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == len(calls)


async def test_airlock_replay_throttled_beyond_the_wait_is_requeued_without_an_attempt(
    start_app: Any,
    sandbox: Sandbox,
    clock: Clock,
    make_worker: Any,
) -> None:
    async with start_app(run_workers=False, throttle_max_wait=0.0) as sluice:
        uid = await deploy_limit(sluice, sandbox, 200, ["POST"])
        gate = sluice.state.throttle
        [rule] = gate.rules[ORG]
        # Someone else holds the next 3 seconds of slots.
        await gate._script(keys=[gate.slot_key(rule)], args=[f"{rule.interval_us * 600:.3f}", 10**7])
        response = await sluice.client.post(
            "/v1/purchases", json=PURCHASE, headers=sluice.headers(Prefer="respond-async")
        )
        assert response.status_code == 202
        assert await make_worker(sluice.state).run_once() == 1
        async with sluice.state.sessionmaker() as session:
            call = (await session.scalars(select(AsyncCall))).one()
            log = (await session.scalars(select(AsyncCallLog).where(AsyncCallLog.call_id == call.id))).all()
        assert call.status == CallStatus.CALL_RETRY and call.attempts == 0 and call.ttl == 13
        assert call.throttle_uid == uid and call.throttle_version == 1 and call.throttle_slot is not None
        assert 2.0 < (call.throttle_slot - clock.now).total_seconds() < 4.0
        assert log[-1].outcome == "throttled" and log[-1].http_status == 429


async def test_undeployed_configs_queue_drains_then_drops_after_24h(
    start_app: Any, sandbox: Sandbox, receiver: Receiver
) -> None:
    async with start_app(run_workers=False, reply_url_allow_loopback=True, throttle_max_wait=0.0) as sluice:
        uid = await deploy_limit(sluice, sandbox, 200, ["POST"])
        gate = sluice.state.throttle
        [rule] = gate.rules[ORG]
        await gate._script(keys=[gate.slot_key(rule)], args=[f"{rule.interval_us * 2000:.3f}", 10**7])
        body = {**PURCHASE, "$reply": f"{receiver.url}/r"}
        response = await sluice.client.post("/v1/purchases", json=body, headers=sluice.headers())
        assert response.status_code == 202
        undeploy = await sluice.client.post(f"{BASE}/throttlingConfigs/{uid}/undeploy", headers=headers())
        assert undeploy.status_code == 200
        # Within the 24 hours the queued call stays.
        assert await throttling_worker.retire_undeployed(sluice.state) == 0
        later = (
            await sluice.client.get(
                f"/v1/async-calls/{response.json()['$reply_id']}", headers=sluice.headers()
            )
        ).json()
        assert later["status"] == "CALL_RETRY"
        from app.db import utcnow

        dropped = await throttling_worker.retire_undeployed(sluice.state, utcnow() + timedelta(hours=25))
        assert dropped == 1
        async with sluice.state.sessionmaker() as session:
            call = (await session.scalars(select(AsyncCall))).one()
            log = (await session.scalars(select(AsyncCallLog).where(AsyncCallLog.call_id == call.id))).all()
            from app.throttling.models import ThrottlingRuntime

            assert (await session.scalars(select(ThrottlingRuntime))).all() == []
        assert call.status == CallStatus.CANCELLED and "undeployed" in (call.last_error or "")
        assert log[-1].phase == "throttle" and log[-1].outcome == "dropped"


@pytest.mark.parametrize("delay", [0.0])
async def test_a_change_reaches_another_replica_within_a_second(
    start_app: Any, sandbox: Sandbox, delay: float
) -> None:
    async with start_app(run_workers=False) as a, start_app(run_workers=False) as b:
        uid = await deploy_limit(a, sandbox, 300, ["GET"])
        await asyncio.sleep(delay)
        for _ in range(100):  # within a second
            if b.state.throttle.rules:
                break
            await asyncio.sleep(0.01)
        assert b.state.throttle.rules[ORG][0].uid == uid
        update = {"urlPattern": f"{sandbox.url}/v2/*", "methods": ["GET"], "maxThroughput": 450}
        changed_at = time.monotonic()
        response = await a.client.put(f"{BASE}/throttlingConfigs/{uid}", json=update, headers=headers())
        assert response.status_code == 200
        while b.state.throttle.rules[ORG][0].max_throughput != 450:
            assert time.monotonic() - changed_at < 1.0
            await asyncio.sleep(0.01)
        runtime = (await b.client.get("/v1/throttling/runtime", headers=b.headers())).json()
        assert runtime["rules"][0]["maxThroughput"] == 450 and runtime["rules"][0]["uid"] == uid


def _count(uid: str, outcome: str) -> float:
    return float(THROTTLED.labels(uid, outcome)._value.get())


async def test_a_process_that_cannot_keep_time_sends_the_call_late_rather_than_refuse_it(
    start_app: Any, sandbox: Sandbox
) -> None:
    """With a margin of a nanosecond, every resumption is late for its slot (by the loop's wake-up
    delay): the call takes a new slot each time, then goes anyway, and the metric says so."""
    async with start_app(run_workers=False, throttle_safety_margin=1e-9) as sluice:
        uid = await deploy_limit(sluice, sandbox, 200, ["GET"])
        late, sent_late = _count(uid, "late"), _count(uid, "sent_late")
        response = await sluice.client.get("/v1/products", headers=sluice.headers())
        assert response.status_code == 200
        assert _count(uid, "sent_late") - sent_late == 1
        assert _count(uid, "late") - late == 4  # MAX_RESERVATIONS slots given up, then sent


async def test_no_margin_means_calls_go_at_their_slot_however_late(start_app: Any, sandbox: Sandbox) -> None:
    """A margin of 0 leaves no jitter budget: no slot is given up for lateness (that would only
    waste slots), the calls go at theirs."""
    async with start_app(run_workers=False, throttle_safety_margin=0.0) as sluice:
        uid = await deploy_limit(sluice, sandbox, 200, ["GET"])
        late, sent_late = _count(uid, "late"), _count(uid, "sent_late")
        paced = _count(uid, "immediate") + _count(uid, "waited")
        answers = await asyncio.gather(
            *(sluice.client.get("/v1/products", headers=sluice.headers()) for _ in range(5))
        )
        assert [r.status_code for r in answers] == [200] * 5
        assert _count(uid, "immediate") + _count(uid, "waited") - paced == 5
        assert _count(uid, "late") == late and _count(uid, "sent_late") == sent_late


class RedisCut:
    """A TCP relay to the real Redis that the test can cut, as a network failure would."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def test_calls_go_unenforced_when_redis_fails(start_app: Any, sandbox: Sandbox) -> None:
    """Without Redis there is no shared count: partner calls go (fail open) instead of every call
    of the organisation failing, counted as `unenforced`."""
    relay = RedisCut()
    async with start_app(run_workers=False, redis_url=await relay.start()) as sluice:
        uid = await deploy_limit(sluice, sandbox, 200, ["GET"])
        # Once with Redis up: the token and the API key are known to the process.
        assert (await sluice.client.get("/v1/products", headers=sluice.headers())).status_code == 200
        unenforced = _count(uid, "unenforced")
        await relay.cut()
        response = await sluice.client.get("/v1/products", headers=sluice.headers())
        assert response.status_code == 200, response.text
        assert _count(uid, "unenforced") - unenforced == 1
