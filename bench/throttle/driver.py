"""One load process of the throttling bench: Sluice's partner client, driven as fast as it goes.

    python -m bench.throttle.driver --index 0      (started by `python -m bench.throttle`)

Built as the lifespan builds it (app/main.py): `Settings()` from the environment (DATABASE_URL,
REDIS_URL, REDIS_KEY_PREFIX, PARTNER_BASE_URL), the Redis client of `app.redis.create_redis`, a
`PartnerClient` whose `throttle` is a `ThrottleGate`, and the gate's rules loop
(`ThrottleGate.run`) in the background, which picks up deploys by pub/sub. Tracing is off
(a no-op tracer): the figures are about the limiter.

It reads one JSON command per line on stdin and answers one JSON line on its original stdout
(anything else the process prints goes to stderr, i.e. the log file):

- `{"cmd": "micro", "calls": N}`: the limiter alone, unloaded: N sequential `admit()` calls on a
  rule that always has a slot, N without a rule, N Redis PINGs; then 64 tasks calling `admit()`
  for a second (the limiter's own ceiling in one process).
- `{"cmd": "await_version", "version": V, "timeout": S}`: wait until the rules loop has loaded
  version V (forcing a `reload()` after S seconds).
- `{"cmd": "run", ...}`: one phase (see `run_phase`): `concurrency` tasks calling
  `client.request("GET", "/v2/product-list")` for `duration` seconds from `start_at` (Unix
  time), as `org` (the `UpstreamExchange` of each call); `mode` "closed" (each task calls again
  as soon as its call is done; a `Throttled` call is counted and tried again at once) or "paced"
  (the calls are spaced locally at `rate` per second, the way the limiter spaces them, but
  without it: the same process cost minus the limiter).
- `{"cmd": "quit"}`.

Redis commands are counted by wrapping this process's client's `execute_command` (every command
of the pool-based client goes through it; the rules loop's pub/sub connection does not), and the
GCRA script's round trip is timed by wrapping `ThrottleGate._script`. Neither changes what the
limiter does.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import resource
import secrets
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import IO, Any

from bench.common.serving import run_event_loop

PATH = "/v2/product-list"
MICRO_ORG = "bench-micro"
OUTCOME_METRIC = "sluice_throttle_calls"  # prometheus_client drops the counter's "_total"
MICRO_TASKS = 64
MICRO_SECONDS = 1.0
RULES_TASK = "throttling-rules"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(samples: array[float] | list[float]) -> dict[str, float | int]:
    values = sorted(samples)
    if not values:
        return {"n": 0}

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {
        "n": len(values),
        "mean_us": sum(values) / len(values) * 1e6,
        "p50_us": at(0.50) * 1e6,
        "p99_us": at(0.99) * 1e6,
        "max_us": values[-1] * 1e6,
    }


class CommandCounter:
    """Counts the commands this process's Redis client sends, by name and origin.

    The origin is "rules" for the commands of the rules loop (the task named RULES_TASK: version
    polls, clock syncs, reloads), "calls" for everything else: the calls' own round trips.
    """

    def __init__(self, redis: Any) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        original: Callable[..., Awaitable[Any]] = redis.execute_command
        counts = self.counts

        async def counted(*args: Any, **options: Any) -> Any:
            name = args[0]
            name = (name.decode() if isinstance(name, bytes) else str(name)).upper()
            task = asyncio.current_task()
            origin = "rules" if task is not None and task.get_name() == RULES_TASK else "calls"
            counts[f"{origin}:{name}"] += 1
            return await original(*args, **options)

        # An instance attribute: found before the class's method, for this client only.
        setattr(redis, "execute_command", counted)  # noqa: B010

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


class TimedScript:
    """Times each call of the gate's GCRA script (one EVALSHA round trip, as the caller sees it)."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.samples: array[float] = array("d")

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self.script(*args, **kwargs)
        finally:
            self.samples.append(time.perf_counter() - started)


class Pacer:
    """A local GCRA: calls spaced 1/rate apart, no Redis (the 'paced, no config' phases)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0
        self.loop = asyncio.get_running_loop()

    async def wait(self) -> None:
        now = self.loop.time()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


class Driver:
    def __init__(self, index: int, out: IO[str], warm_connections: int) -> None:
        from opentelemetry import trace

        from app.db import create_engine, create_sessionmaker
        from app.redis import create_redis
        from app.settings import Settings
        from app.throttling.limiter import ThrottleGate
        from app.upstream.client import PartnerClient

        self.index = index
        self.out = out
        self.warm_connections = warm_connections
        self.settings = Settings()
        if not self.settings.partner_base_url or not self.settings.redis_url:
            raise SystemExit("PARTNER_BASE_URL and REDIS_URL must be set")
        self.base_url = self.settings.partner_base_url.rstrip("/")
        self.url = self.base_url + PATH
        self.engine = create_engine(self.settings)
        self.sessionmaker = create_sessionmaker(self.engine)
        self.redis = create_redis(self.settings)
        self.commands = CommandCounter(self.redis)
        self.client = PartnerClient(
            "partner",
            settings=self.settings,
            redis=self.redis,
            tracer=trace.NoOpTracer(),
            base_url=self.base_url,
        )
        self.gate = ThrottleGate(self.settings, self.redis, self.sessionmaker)
        self.client.throttle = self.gate
        self.timed: TimedScript | None = None
        if hasattr(self.gate, "_script"):
            self.timed = TimedScript(self.gate._script)
            self.gate._script = self.timed
        # When each admit() returned: the moment the limiter let the call go.
        self.releases: array[float] = array("d")
        admit = self.gate.admit
        releases = self.releases

        async def timed_admit(method: str, url: str, exchange: Any) -> None:
            await admit(method, url, exchange)
            releases.append(time.time())

        setattr(self.gate, "admit", timed_admit)  # noqa: B010
        self.stop = asyncio.Event()
        self.rules_task: asyncio.Task[None] | None = None

    def reply(self, payload: dict[str, Any]) -> None:
        self.out.write(json.dumps(payload) + "\n")
        self.out.flush()

    async def start(self) -> None:
        await self.gate.reload()
        self.rules_task = asyncio.create_task(self.gate.run(self.stop), name=RULES_TASK)
        # The script is in Redis before anything is measured (no NOSCRIPT + SCRIPT LOAD later).
        with contextlib.suppress(ImportError):
            from app.throttling.limiter import GCRA_SCRIPT

            await self.redis.script_load(GCRA_SCRIPT)
        # A warm pool, as a process that has served a while has: no connects in the figures.
        warm = min(
            self.warm_connections, getattr(self.settings, "redis_max_connections", self.warm_connections)
        )
        await asyncio.gather(*(self.redis.ping() for _ in range(warm)))
        # One call before anything is measured: the OAuth token is fetched (and cached) here.
        await self.call_once("bench-warmup")

    async def call_once(self, org: str) -> None:
        from app.upstream.client import UpstreamExchange, exchange_var

        exchange_var.set(UpstreamExchange(org_id=org))
        await self.client.request("GET", PATH, endpoint="bench")

    async def close(self) -> None:
        self.stop.set()
        if self.rules_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.rules_task, 5)
        with contextlib.suppress(Exception):
            await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.engine.dispose()

    # ------------------------------------------------------------------------------ commands

    async def await_version(self, version: int, timeout: float) -> dict[str, Any]:
        started = time.perf_counter()
        deadline = started + timeout
        # Polled: the gate has no event to wait on, and the bench must not change it.
        while self.gate.seen_version < version and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        forced = self.gate.seen_version < version
        if forced:
            await self.gate.reload()
        return {
            "seen_version": self.gate.seen_version,
            "after_s": time.perf_counter() - started,
            "forced_reload": forced,
            "rules": sum(len(r) for r in self.gate.rules.values()),
        }

    async def micro(self, calls: int) -> dict[str, Any]:
        """The limiter alone, without HTTP: what one admit() costs, and how many one process does."""
        from app.throttling.limiter import ThrottleGate, make_rule
        from app.throttling.models import ThrottlingRuntime
        from app.upstream.client import UpstreamExchange

        gate = ThrottleGate(self.settings, self.redis, self.sessionmaker)
        # A rule so generous that every call gets its slot at once: no sleep in the figures.
        row = ThrottlingRuntime(
            config_uid=f"bench-micro-{secrets.token_hex(4)}",
            version=1,
            org_id=MICRO_ORG,
            url_pattern=f"{self.base_url}/v2/*",
            methods=["GET"],
            max_throughput=100_000_000,
            active=True,
        )
        gate.rules = {MICRO_ORG: (make_rule(row, self.settings.throttle_safety_margin),)}
        covered = UpstreamExchange(org_id=MICRO_ORG)
        uncovered = UpstreamExchange(org_id="bench-nobody")
        await gate.admit("GET", self.url, covered)  # loads the script (SCRIPT LOAD on NOSCRIPT)

        async def sequential(step: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
            samples: array[float] = array("d")
            cpu0 = cpu_seconds()
            for _ in range(calls):
                t0 = time.perf_counter()
                await step()
                samples.append(time.perf_counter() - t0)
            cpu = cpu_seconds() - cpu0
            return {**percentiles(samples), "cpu_us_per_call": cpu / calls * 1e6}

        before = self.commands.snapshot()
        with_rule = await sequential(lambda: gate.admit("GET", self.url, covered))
        middle = self.commands.snapshot()
        without_rule = await sequential(lambda: gate.admit("GET", self.url, uncovered))
        after = self.commands.snapshot()
        ping = await sequential(self.redis.ping)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + MICRO_SECONDS
        done = 0

        async def hammer() -> None:
            nonlocal done
            while loop.time() < deadline:
                await gate.admit("GET", self.url, covered)
                done += 1

        cpu0, t0 = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(hammer() for _ in range(MICRO_TASKS)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        return {
            "calls": calls,
            "admit_with_rule": with_rule,
            "admit_without_rule": without_rule,
            "redis_ping": ping,
            "commands_with_rule": diff(middle, before),
            "commands_without_rule": diff(after, middle),
            "concurrent": {
                "tasks": MICRO_TASKS,
                "admits": done,
                "admits_per_s": done / wall,
                "cpu_us_per_admit": cpu / max(1, done) * 1e6,
                "cpu_share": cpu / wall,
            },
        }

    async def run_phase(self, cmd: dict[str, Any]) -> dict[str, Any]:
        from app.upstream.client import UpstreamExchange, exchange_var
        from app.upstream.errors import Throttled, UpstreamError

        org: str = cmd["org"]
        mode: str = cmd["mode"]
        concurrency = int(cmd["concurrency"])
        duration = float(cmd["duration"])
        loop = asyncio.get_running_loop()
        rule = self.gate.match(org, "GET", self.url)
        pacer = Pacer(float(cmd["rate"])) if mode == "paced" else None

        late = time.time() - float(cmd["start_at"])
        if late < 0:
            await asyncio.sleep(-late)
        start_wall = time.time()
        deadline = loop.time() + (float(cmd["start_at"]) + duration - start_wall)
        ok = throttled = 0
        errors: collections.Counter[str] = collections.Counter()
        request = self.client.request

        async def caller() -> None:
            nonlocal ok, throttled
            while loop.time() < deadline:
                # A fresh exchange per call, as each gateway request has its own.
                exchange_var.set(UpstreamExchange(org_id=org))
                if pacer is not None:
                    await pacer.wait()
                try:
                    await request("GET", PATH, endpoint="bench")
                    ok += 1
                except Throttled:
                    throttled += 1
                except UpstreamError as exc:
                    errors[exc.code] += 1
                except Exception as exc:
                    errors[type(exc).__name__] += 1

        outcomes0 = self.outcomes(rule)
        commands0 = self.commands.snapshot()
        if self.timed is not None:
            del self.timed.samples[:]
        del self.releases[:]
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        tasks = [asyncio.create_task(caller()) for _ in range(concurrency)]
        # After the deadline no call starts; those holding a slot still go (at most
        # THROTTLE_MAX_WAIT later).
        _, pending = await asyncio.wait(tasks, timeout=duration + self.settings.throttle_max_wait + 15)
        for task in pending:
            task.cancel()
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - t0
        return {
            "phase": cmd.get("phase"),
            "org": org,
            "mode": mode,
            "concurrency": concurrency,
            "late_start_ms": max(0.0, late) * 1000,
            "start_wall": start_wall,
            "wall_s": wall,
            "drain_s": max(0.0, loop.time() - deadline),
            "cancelled": len(pending),
            "ok": ok,
            "throttled": throttled,
            "errors": dict(errors),
            "attempts": ok + throttled + sum(errors.values()),
            "cpu_s": cpu,
            "commands": diff(self.commands.snapshot(), commands0),
            "script": percentiles(self.timed.samples) if self.timed is not None else {"n": 0},
            "outcomes": diff(self.outcomes(rule), outcomes0),
            "releases": base64.b64encode(self.releases.tobytes()).decode() if rule is not None else "",
            "rule": None
            if rule is None
            else {"uid": rule.uid, "max_throughput": rule.max_throughput, "interval_us": rule.interval_us},
        }

    def outcomes(self, rule: Any) -> dict[str, int]:
        """The limiter's own count of its decisions for `rule`, by outcome (whatever outcomes it has)."""
        if rule is None:
            return {}
        from prometheus_client import REGISTRY

        counts: dict[str, int] = {}
        for metric in REGISTRY.collect():
            if metric.name != OUTCOME_METRIC:
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("config") == rule.uid:
                    outcome = sample.labels.get("outcome", "?")
                    counts[outcome] = counts.get(outcome, 0) + int(sample.value)
        return counts

    async def serve(self) -> None:
        await self.start()
        self.reply({"ready": True, "pid": os.getpid(), "index": self.index})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            cmd = json.loads(line)
            try:
                match cmd["cmd"]:
                    case "quit":
                        self.reply({"bye": True})
                        break
                    case "micro":
                        self.reply(await self.micro(int(cmd["calls"])))
                    case "await_version":
                        self.reply(await self.await_version(int(cmd["version"]), float(cmd["timeout"])))
                    case "run":
                        self.reply(await self.run_phase(cmd))
                    case other:
                        self.reply({"error": f"unknown command {other!r}"})
            except Exception as exc:
                self.reply({"error": f"{type(exc).__name__}: {exc}"})


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


async def amain(index: int, out: IO[str], warm_connections: int) -> None:
    driver = Driver(index, out, warm_connections)
    try:
        await driver.serve()
    finally:
        await driver.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--warm-connections", type=int, default=64, help="Redis connections opened at start")
    args = parser.parse_args()
    # The protocol keeps the original stdout; everything else printed goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    run_event_loop(amain(args.index, out, args.warm_connections))


if __name__ == "__main__":
    main()
