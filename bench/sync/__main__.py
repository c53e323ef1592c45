"""Two Sluice instances, A and B, converging: the two-way order sync under load.

    python -m bench.sync [--orders 10000] [--edit-share 0.1] [--batch N] [--concurrency N]
                         [--clients 32] [--interval 0.2] [--gate] [--skip-edits] [--verbose]
                         [--keep-db] [--keep-logs] [--check]

1. Creates two fresh Postgres databases `sluice_bench_sync_<hex>_a` and `_b`, migrates both
   (`python -m app migrate`) and starts A and B (uvicorn, one worker each), each the other's sync
   peer: SYNC_PEER_URL, the run's bootstrap admin key as SYNC_PEER_API_KEY, SYNC_INTERVAL
   `--interval`, SYNC_BATCH_SIZE / SYNC_PUSH_CONCURRENCY from `--batch` / `--concurrency` (the
   app's defaults when not given). Redis keys go under a per-run prefix.
2. Phase 1: `--orders` orders, their ids chosen here, are POSTed to B by `--clients` concurrent
   clients while both sync loops run. Timed from the first create, and from the last, until A
   and B both hold every order in ST_OK and neither has anything to push (GET /v1/sync/status on
   both every `--poll` s). Both change feeds are then read whole and compared (content, version,
   author, state). With `--gate` the loops idle while the orders are created (SYNC_INTERVAL of a
   day); rounds are then run back to back on both (POST /v1/sync/run) and the time runs from the
   first of them: the sync alone, without the creation load.
3. Phase 2: A and B are restarted with SYNC_INTERVAL of a day (rounds only on demand), so that no
   round can run between the two edits of an order. `--edit-share` of the orders are edited on A
   and on B at once (PUT with If-Match of the version each side holds; other notes and status on
   each side). Rounds then run on both at once, back to back, until neither has anything to push:
   the collisions each side found (ST_COLLISION) against those made. Every collision is resolved
   on A ({"take": "local"}) and rounds run again until both hold the same orders, all ST_OK.
4. After each convergence, a quiet period (`--quiet` s of loop rounds in phase 1, two rounds on
   each side in phase 2) in which nothing may be pushed and neither feed may grow: an echo would.
5. Prints the figures and each target PASS or MISSED (orders/s, orders lost, collisions found
   against made, writes sent across per change); writes bench/results/sync-<UTC>.json. To show
   what limits the rate it also prints the CPU share of A, B, Postgres, the bench itself and the
   rest of the machine (/proc), each database's commits and rows written per order
   (pg_stat_database, read after the instances stop so that every backend has flushed), and the
   mean number of backends running, waiting for the feed lock or idle inside a transaction
   (pg_stat_activity, sampled every 50 ms).

Every child process is stopped, both databases dropped and the Redis keys deleted on the way out
(Ctrl-C and failures too). Exit status: 0 ok, 1 the run failed (a process died, no convergence in
`--timeout`), 2 with `--check` when a target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.common.cpu import cpu_by_name, cpu_of, cpu_of_all, machine_ticks
from bench.common.database import (
    add_server_args,
    asyncpg_dsn,
    clear_redis_prefix,
    create_database,
    database_url,
    drop_databases,
    migrate,
)
from bench.common.processes import (
    BenchError,
    Child,
    Children,
    free_port,
    server_pids,
    sigterm_as_sigint,
    uvicorn_cmd,
    wait_ready,
)
from bench.common.results import (
    git_state,
    line_buffered_stdout,
    machine_info,
    machine_line,
    utc_stamp,
    write_results,
)
from bench.sync.api import Api, Comparison, compare, edit_body, order_bodies

TARGET_ORDERS_PER_S = 500.0
TARGET_ECHO = 1.0
ON_DEMAND = 86_400.0  # SYNC_INTERVAL (and SYNC_MAX_BACKOFF) when rounds run only on demand
STALL_S = 60.0  # no progress for this long: the run fails
SIDES = ("a", "b")
# Postgres backends flush their statistics at most once a second, and 10 s after going idle.
STATS_SETTLE_S = 11.0
DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_fetched", "tup_returned")


# ------------------------------------------------------------------------------ instances


@dataclass
class Instance:
    side: str  # "a" | "b"
    db_name: str
    db_url: str
    port: int = field(default_factory=free_port)  # kept across restarts: the peer's cursor row is per URL
    child: Child | None = None
    pids: list[int] = field(default_factory=list)  # the serving processes (uvicorn's workers)

    @property
    def name(self) -> str:
        return f"sluice-{self.side}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Pair:
    """A and B, each the other's peer, and how they were last started."""

    def __init__(
        self, args: argparse.Namespace, children: Children, run_id: str, api_key: str, prefix: str
    ) -> None:
        self.args = args
        self.children = children
        self.api_key = api_key
        self.prefix = prefix
        self.a = Instance("a", *self._db(run_id, "a"))
        self.b = Instance("b", *self._db(run_id, "b"))
        self.starts = 0
        self.interval: float | None = None

    def _db(self, run_id: str, side: str) -> tuple[str, str]:
        name = f"sluice_bench_sync_{run_id}_{side}"
        return name, database_url(self.args.postgres_url, name)

    @property
    def both(self) -> tuple[Instance, Instance]:
        return self.a, self.b

    def peer(self, me: Instance) -> Instance:
        return self.b if me is self.a else self.a

    def env(self, me: Instance, interval: float) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            INSTANCE_NAME=me.name,
            DATABASE_URL=me.db_url,
            REDIS_URL=self.args.redis_url,
            REDIS_KEY_PREFIX=f"{self.prefix}{me.side}:",
            BOOTSTRAP_ADMIN_KEY=self.api_key,
            SANDBOX_ENABLED="false",
            PARTNER_BASE_URL="http://127.0.0.1:9",
            COMMLOG_ENABLED="false",
            LOG_LEVEL="WARNING",
            SYNC_PEER_URL=self.peer(me).url,
            SYNC_PEER_API_KEY=self.api_key,
            SYNC_INTERVAL=str(interval),
        )
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
        if interval >= ON_DEMAND:
            # A failed round (the peer not up yet) must not bring the next one forward.
            env["SYNC_MAX_BACKOFF"] = str(interval)
        if self.args.batch:
            env["SYNC_BATCH_SIZE"] = str(self.args.batch)
        if self.args.concurrency:
            env["SYNC_PUSH_CONCURRENCY"] = str(self.args.concurrency)
        return env

    def migrate(self, log_dir: Path) -> None:
        for inst in self.both:
            folder = log_dir / f"migrate-{inst.side}"
            folder.mkdir(exist_ok=True)
            migrate(self.env(inst, ON_DEMAND), folder)

    def start(self, interval: float) -> None:
        """Start both (spawned together, so that the first one's start-up round rarely fails)."""
        self.starts += 1
        self.interval = interval
        for inst in self.both:
            cmd = uvicorn_cmd("app.main:create_app", inst.port, factory=True, workers=self.args.workers)
            inst.child = self.children.start(f"{inst.name}-{self.starts}", cmd, self.env(inst, interval))
        for inst in self.both:
            assert inst.child is not None
            wait_ready(inst.child, f"{inst.url}/health/live")
            inst.pids = server_pids(inst.child, self.args.workers)

    def stop(self) -> None:
        for inst in self.both:
            if inst.child is not None:
                inst.child.stop()

    def dead(self) -> str | None:
        for inst in self.both:
            if inst.child is not None and not inst.child.alive():
                # Named by side (sluice-a), not by start as the child is (sluice-a-2).
                return (
                    f"{inst.name} exited with code {inst.child.proc.returncode}.\n{inst.child.last_output()}"
                )
        return None


# ------------------------------------------------------------------------------------ CPU


@dataclass
class Cpu:
    at: float
    a: float | None
    b: float | None
    postgres: float
    redis: float
    bench: float | None
    machine: tuple[int, int, int]

    @classmethod
    def take(cls, pair: Pair) -> Cpu:
        return cls(
            at=time.perf_counter(),
            a=cpu_of_all(pair.a.pids),
            b=cpu_of_all(pair.b.pids),
            postgres=cpu_by_name("postgres"),
            redis=cpu_by_name("redis-server"),
            bench=cpu_of(os.getpid()),
            machine=machine_ticks(),
        )


def cpu_window(c0: Cpu, c1: Cpu) -> dict[str, Any]:
    """CPU seconds of each process between two snapshots, and in cores (seconds / wall seconds)."""
    wall = c1.at - c0.at
    out: dict[str, Any] = {"seconds": round(wall, 3)}
    for name in ("a", "b", "postgres", "redis", "bench"):
        x0, x1 = getattr(c0, name), getattr(c1, name)
        used = None if x0 is None or x1 is None else x1 - x0
        out[f"{name}_s"] = None if used is None else round(used, 3)
        out[f"{name}_cores"] = None if used is None or wall <= 0 else round(used / wall, 3)
    busy, total = c1.machine[0] - c0.machine[0], c1.machine[1] - c0.machine[1]
    out["machine_busy"] = round(busy / total, 3) if total else None
    # What the machine was busy with besides the processes above: other programs (or the kernel).
    ours = sum(out[f"{name}_cores"] or 0.0 for name in ("a", "b", "postgres", "redis", "bench"))
    out["other_cores"] = round(busy / total * (os.cpu_count() or 1) - ours, 3) if total else None
    out["machine_steal"] = round((c1.machine[2] - c0.machine[2]) / total, 3) if total else None
    return out


def cpu_text(w: dict[str, Any]) -> str:
    def share(name: str) -> str:
        cores = w.get(f"{name}_cores")
        return "-" if cores is None else f"{cores * 100:.0f}%"

    busy = w.get("machine_busy")
    return (
        f"CPU A {share('a')} B {share('b')} postgres {share('postgres')} bench {share('bench')} "
        f"other {share('other')} (of one core), machine {'-' if busy is None else f'{busy * 100:.0f}%'} busy"
    )


# ------------------------------------------------------------------------- database work


async def db_stats(pair: Pair) -> dict[str, dict[str, int]]:
    """pg_stat_database counters of A's and B's databases (transactions, rows)."""
    conn = await asyncpg.connect(asyncpg_dsn(pair.args.postgres_url), timeout=10)
    try:
        rows = await conn.fetch(
            f"SELECT datname, {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = ANY($1::text[])",
            [inst.db_name for inst in pair.both],
        )
    finally:
        await conn.close()
    by_name = {r["datname"]: r for r in rows}
    return {inst.side: {k: int(by_name[inst.db_name][k]) for k in DB_COUNTERS} for inst in pair.both}


def db_work(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], per: int) -> dict[str, Any]:
    """The counters' growth on each side, in total and per order (or per change)."""
    out: dict[str, Any] = {}
    for side in SIDES:
        grown = {k: after[side][k] - before[side][k] for k in DB_COUNTERS}
        out[side] = grown | {f"{k}_per": round(v / per, 2) for k, v in grown.items() if per}
    return out


def db_text(work: dict[str, Any], what: str) -> str:
    return (
        "; ".join(
            f"{side.upper()} {work[side]['xact_commit_per']:.1f} commits, "
            f"{work[side]['tup_inserted_per']:.1f} rows inserted, {work[side]['tup_updated_per']:.1f} updated"
            for side in SIDES
        )
        + f" per {what}"
    )


class Activity:
    """Samples pg_stat_activity of A's and B's databases: how many backends run a statement, wait
    for a lock (`advisory`: the lock of the feed's sequencer, service.sequence_changes), or sit
    idle inside a transaction (waiting for the application's next statement)."""

    def __init__(self, pair: Pair, every: float = 0.05) -> None:
        self.names = {inst.db_name: inst.side for inst in pair.both}
        self.dsn = asyncpg_dsn(pair.args.postgres_url)
        self.every = every
        self.total: dict[str, Counter[str]] = {side: Counter() for side in SIDES}
        self.window: dict[str, Counter[str]] = {side: Counter() for side in SIDES}
        self.samples = self.window_samples = 0

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        try:
            while not stop.is_set():
                rows = await conn.fetch(
                    "SELECT datname, state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = ANY($1::text[])",
                    list(self.names),
                )
                self.samples += 1
                self.window_samples += 1
                for r in rows:
                    seen: list[str] = []
                    if r["state"] == "active":
                        seen.append("active")
                        if r["wait_event_type"] == "Lock":
                            seen.append(f"lock_{r['wait_event']}")
                    elif r["state"] == "idle in transaction":
                        seen.append("idle_in_tx")
                    for what in seen:
                        self.total[self.names[r["datname"]]][what] += 1
                        self.window[self.names[r["datname"]]][what] += 1
                await asyncio.sleep(self.every)
        finally:
            await conn.close()

    @staticmethod
    def _mean(counts: dict[str, Counter[str]], samples: int) -> dict[str, dict[str, float]]:
        return {
            side: {k: round(v / samples, 2) for k, v in sorted(c.items())} if samples else {}
            for side, c in counts.items()
        }

    def means(self) -> dict[str, dict[str, float]]:
        return self._mean(self.total, self.samples)

    def take_window(self) -> dict[str, dict[str, float]]:
        out = self._mean(self.window, self.window_samples)
        self.window = {side: Counter() for side in SIDES}
        self.window_samples = 0
        return out


def activity_text(means: dict[str, dict[str, float]]) -> str:
    def one(m: dict[str, float]) -> str:
        rows = sum(v for k, v in m.items() if k.startswith("lock_") and k != "lock_advisory")
        return (
            f"{m.get('active', 0):.1f} active ({m.get('lock_advisory', 0):.1f} waiting for the feed lock, "
            f"{rows:.1f} for other locks), {m.get('idle_in_tx', 0):.1f} idle in a transaction"
        )

    return f"backends A {one(means.get('a', {}))}; B {one(means.get('b', {}))}"


# ---------------------------------------------------------------------------- convergence


def count(status: dict[str, Any], state: str) -> int:
    return int(status["counts"].get(state, 0))


def held(status: dict[str, Any]) -> int:
    return sum(int(v) for v in status["counts"].values())


Condition = Callable[[dict[str, Any], dict[str, Any], dict[str, int]], bool]


@dataclass
class Watch:
    """What a wait for convergence saw."""

    label: str
    t0: float
    converged_at: float | None = None
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SIDES, 0))
    round_results: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    activity: dict[str, dict[str, float]] = field(default_factory=dict)
    milestone_at: float | None = None  # when `milestone` first held

    @property
    def seconds(self) -> float | None:
        return None if self.converged_at is None else self.converged_at - self.t0


async def statuses(apis: dict[str, Api]) -> dict[str, dict[str, Any]]:
    a, b = await asyncio.gather(apis["a"].status(), apis["b"].status())
    return {"a": a, "b": b}


async def converge(
    pair: Pair,
    apis: dict[str, Api],
    until: Condition,
    *,
    label: str,
    t0: float,
    drive: bool,
    args: argparse.Namespace,
    extra: Callable[[], str] | None = None,
    milestone: Condition | None = None,
) -> Watch:
    """Poll both statuses until `until(status_a, status_b, rounds)` holds. With `drive`, rounds run
    back to back on both sides meanwhile (POST /v1/sync/run), as if SYNC_INTERVAL were 0."""
    watch = Watch(label, t0)
    stop = asyncio.Event()

    async def driver(side: str) -> None:
        while not stop.is_set():
            result = await apis[side].run_round()
            watch.rounds[side] += 1
            watch.round_results.append(
                {"side": side, "t": round(time.perf_counter() - t0, 3)}
                | {k: result[k] for k in ("pulled", "pushed", "failed")}
            )

    drivers = [asyncio.create_task(driver(side)) for side in SIDES] if drive else []
    activity = Activity(pair)
    sampler = asyncio.create_task(activity.run(stop))
    deadline = time.perf_counter() + args.timeout
    cpu_last = Cpu.take(pair)
    last_print = last_change = time.perf_counter()
    seen: tuple[Any, ...] = ()
    ok = False
    try:
        while True:
            st = await statuses(apis)
            now = time.perf_counter()
            for task in drivers:
                if task.done() and task.exception() is not None:
                    raise BenchError(f"{label}: a sync round failed: {task.exception()}")
            if milestone and watch.milestone_at is None and milestone(st["a"], st["b"], watch.rounds):
                watch.milestone_at = now
            if until(st["a"], st["b"], watch.rounds):
                if milestone and watch.milestone_at is None:
                    watch.milestone_at = now
                watch.converged_at, watch.status = now, st
                ok = True
                return watch
            if (why := pair.dead()) is not None:
                raise BenchError(why)
            state = tuple(
                (tuple(s["counts"].items()), s["pushed_total"], s["pulled_total"]) for s in st.values()
            )
            if state != seen:
                seen, last_change = state, now
            if now - last_print >= 1.0:
                cpu_now = Cpu.take(pair)
                w = cpu_window(cpu_last, cpu_now)
                cpu_last, last_print = cpu_now, now
                point: dict[str, Any] = {
                    "t": round(now - t0, 2),
                    **{
                        f"{side}_{what}": value
                        for side, s in st.items()
                        for what, value in (
                            ("held", held(s)),
                            ("ok", count(s, "ST_OK")),
                            ("pending", s["pending_push"]),
                            ("collisions", count(s, "ST_COLLISION")),
                            ("pushed", s["pushed_total"]),
                            ("pulled", s["pulled_total"]),
                        )
                    },
                    "cpu": w,
                }
                db_now = activity.take_window()
                point["db"] = db_now
                watch.progress.append(point)
                print(
                    f"  {label} {point['t']:6.1f} s"
                    + (f"  {extra()}" if extra else "")
                    + f"  A holds {point['a_held']} (ST_OK {point['a_ok']}, pending {point['a_pending']})"
                    f"  B holds {point['b_held']} (ST_OK {point['b_ok']}, pending {point['b_pending']})"
                    f"  {cpu_text(w)}"
                )
                if args.verbose:
                    print(f"    {activity_text(db_now)}")
            if now > deadline:
                raise BenchError(
                    f"{label}: not converged within --timeout {args.timeout:g} s; last status {st}"
                )
            if now - last_change > STALL_S:
                raise BenchError(f"{label}: no progress for {STALL_S:.0f} s; last status {st}")
            await asyncio.sleep(args.poll)
    finally:
        stop.set()
        await asyncio.gather(sampler, return_exceptions=True)
        watch.activity = activity.means()
        if ok:
            # A round in progress ends by itself (nothing is left to do); wait for it.
            results = await asyncio.gather(*drivers, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                raise BenchError(f"{label}: a sync round failed: {failed[0]!r}")
        else:
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)


async def settle(apis: dict[str, Api]) -> None:
    """After a start with rounds on demand: one round on each side, one after the other. The
    round lock makes each wait for the start-up round; after them nothing runs by itself."""
    for side in SIDES:
        await apis[side].run_round()


async def quiet_check(
    apis: dict[str, Api], heads: dict[str, int], *, loop_seconds: float | None
) -> dict[str, Any]:
    """Nothing may cross once converged: no push, no feed entry (an echo would make both)."""
    before = await statuses(apis)
    if loop_seconds is not None:
        await asyncio.sleep(loop_seconds)  # the loops run their rounds meanwhile
        how = f"{loop_seconds:g} s of loop rounds"
    else:
        for _ in range(2):
            await asyncio.gather(apis["a"].run_round(), apis["b"].run_round())
        how = "2 rounds on each side"
    after = await statuses(apis)
    grown = {}
    for side in SIDES:
        items, _ = await apis[side].feed(heads[side])
        grown[side] = len(items)
    return {
        "how": how,
        "pushed": {s: after[s]["pushed_total"] - before[s]["pushed_total"] for s in SIDES},
        "pulled": {s: after[s]["pulled_total"] - before[s]["pulled_total"] for s in SIDES},
        "feed_growth": grown,
        "pending": {s: after[s]["pending_push"] for s in SIDES},
        "quiet": all(after[s]["pushed_total"] == before[s]["pushed_total"] and not grown[s] for s in SIDES),
    }


async def read_both(apis: dict[str, Api]) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, int]]:
    (on_a, head_a), (on_b, head_b) = await asyncio.gather(apis["a"].feed(), apis["b"].feed())
    return {"a": on_a, "b": on_b}, {"a": head_a, "b": head_b}


def crossed(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "pushed": {s: after[s]["pushed_total"] - before[s]["pushed_total"] for s in SIDES},
        "pulled": {s: after[s]["pulled_total"] - before[s]["pulled_total"] for s in SIDES},
    }


def quiet_text(q: dict[str, Any]) -> str:
    return (
        f"quiet after convergence ({q['how']}): pushed A {q['pushed']['a']} B {q['pushed']['b']}, "
        f"new feed entries A {q['feed_growth']['a']} B {q['feed_growth']['b']} "
        f"({'none: no echo' if q['quiet'] else 'ECHO OR LEFTOVER WORK'})"
    )


def comparison_text(c: Comparison) -> str:
    return (
        f"A {c.on_a} orders, B {c.on_b}: {c.equal} equal, {len(c.differing)} differing, "
        f"{len(c.only_on_a)} only on A, {len(c.only_on_b)} only on B, {len(c.lost)} lost; "
        f"states A {c.states_a} B {c.states_b}"
    )


# ------------------------------------------------------------------------------- phase 1


async def run_clients(clients: int, jobs: list[Any], work: Callable[[Any], Any]) -> None:
    """`clients` tasks taking the next job from a shared iterator until none is left."""
    it = iter(jobs)

    async def client() -> None:
        for job in it:
            await work(job)

    await asyncio.gather(*(client() for _ in range(clients)))


async def phase_create(pair: Pair, args: argparse.Namespace, http: aiohttp.ClientSession) -> dict[str, Any]:
    apis = {inst.side: Api(http, inst.name, inst.url, pair.api_key) for inst in pair.both}
    if args.gate:
        await settle(apis)
    bodies = order_bodies(args.orders, args.seed)
    created: dict[str, int] = {}
    before = await statuses(apis)
    n = len(bodies)
    done = asyncio.Event()

    async def make(job: tuple[Any, bytes]) -> None:
        order_id, body = job
        created[str(order_id)] = await apis["b"].create(order_id, body)

    def until(a: dict[str, Any], b: dict[str, Any], rounds: dict[str, int]) -> bool:
        return (
            done.is_set()
            and count(a, "ST_OK") == n
            and count(b, "ST_OK") == n
            and a["pending_push"] == 0
            and b["pending_push"] == 0
        )

    def a_holds_all(a: dict[str, Any], b: dict[str, Any], rounds: dict[str, int]) -> bool:
        return done.is_set() and count(a, "ST_OK") == n

    def made() -> str:
        return f"created {len(created)}/{n}" if not done.is_set() else f"created {n}"

    db_sync0: dict[str, dict[str, int]] | None = None
    print(
        f"phase 1: creating {n} orders on B ({args.clients} clients), "
        + ("sync loops idle (--gate)" if args.gate else f"sync loops running every {args.interval:g} s")
    )
    cpu0 = cpu_sync0 = Cpu.take(pair)
    t_first = time.perf_counter()
    watcher = None
    if not args.gate:
        watcher = asyncio.create_task(
            converge(
                pair,
                apis,
                until,
                label="phase 1",
                t0=t_first,
                drive=False,
                args=args,
                extra=made,
                milestone=a_holds_all,
            )
        )
    try:
        await run_clients(args.clients, bodies, make)
    except BaseException:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        raise
    t_created = time.perf_counter()
    cpu_created = Cpu.take(pair)
    done.set()
    create_s = t_created - t_first
    print(
        f"phase 1: {n} orders created on B in {create_s:.2f} s ({n / create_s:.0f}/s; "
        f"{sum(1 for s in created.values() if s == 201)} answered 201); {cpu_text(cpu_window(cpu0, cpu_created))}"
    )
    if watcher is not None:
        watch = await watcher
        t_sync = t_first
    else:
        # Let the creation's statistics reach pg_stat_database: the sync's own work is counted apart.
        await asyncio.sleep(STATS_SETTLE_S)
        db_sync0 = await db_stats(pair)
        cpu_sync0 = Cpu.take(pair)
        t_sync = time.perf_counter()
        watch = await converge(
            pair, apis, until, label="phase 1", t0=t_sync, drive=True, args=args, milestone=a_holds_all
        )
    assert watch.converged_at is not None
    cpu1 = Cpu.take(pair)
    from_first = watch.converged_at - t_first
    after_last = watch.converged_at - t_created
    from_sync = watch.converged_at - t_sync
    rate = n / from_sync
    a_all = None if watch.milestone_at is None else watch.milestone_at - t_sync
    print(
        f"phase 1: converged {from_first:.2f} s after the first create, {after_last:.2f} s after the last"
        + (f", {from_sync:.2f} s after the first round" if args.gate else "")
        + f": {rate:.0f} orders/s synced"
        + (
            f" (A held every order {a_all:.2f} s after {'the first round' if args.gate else 'the first create'})"
            if a_all is not None
            else ""
        )
    )

    feeds, heads = await read_both(apis)
    comparison = compare(feeds["a"], feeds["b"], set(created))
    print(f"phase 1: {comparison_text(comparison)}")
    quiet = await quiet_check(apis, heads, loop_seconds=None if args.gate else args.quiet)
    print(f"phase 1: {quiet_text(quiet)}")
    after = await statuses(apis)
    across = crossed(before, after)
    writes = sum(across["pushed"].values())
    print(
        f"phase 1: across: B pushed {across['pushed']['b']}, A pushed {across['pushed']['a']} "
        f"({writes / n:.3f} writes per change); feed items read: A {across['pulled']['a']} from B's, "
        f"B {across['pulled']['b']} from A's"
    )
    # Until the rounds in flight at convergence ended (converge waits for them): all the sync's work.
    window = cpu_window(cpu_sync0, cpu1)
    per_order = {k: round((window[f"{k}_s"] or 0.0) / n * 1000, 2) for k in ("a", "b", "postgres", "bench")}
    print(
        f"phase 1: {cpu_text(window)} over {window['seconds']:.1f} s"
        + (" (creation included)" if not args.gate else "")
        + f"; CPU per order: A {per_order['a']:.1f} ms, B {per_order['b']:.1f} ms, postgres "
        f"{per_order['postgres']:.1f} ms, bench {per_order['bench']:.1f} ms"
    )
    print(f"phase 1: {activity_text(watch.activity)} (means of samples every 50 ms)")
    return {
        "orders": n,
        "created": {str(k): v for k, v in sorted(Counter(created.values()).items())},
        "mode": "gate" if args.gate else "live",
        "create_s": round(create_s, 3),
        "create_per_s": round(n / create_s, 1),
        "converged_from_first_create_s": round(from_first, 3),
        "converged_after_last_create_s": round(after_last, 3),
        "converged_from_first_round_s": round(from_sync, 3) if args.gate else None,
        "orders_per_s": round(rate, 1),
        "a_held_all_s": None if a_all is None else round(a_all, 3),
        "comparison": comparison.as_dict(),
        "quiet": quiet,
        "changes": n,
        "across": across,
        "writes_per_change": round(writes / n, 4),
        "cpu_create": cpu_window(cpu0, cpu_created),
        "cpu_sync": window,
        "cpu_ms_per_order": per_order,
        "rounds": watch.rounds,
        "db_activity": watch.activity,
        "progress": watch.progress,
        "_feeds": feeds,
        "_created": set(created),
        "_db_sync0": db_sync0,
    }


# ------------------------------------------------------------------------------- phase 2


async def phase_edit(
    pair: Pair,
    args: argparse.Namespace,
    http: aiohttp.ClientSession,
    feeds: dict[str, dict[str, dict[str, Any]]],
    created: set[str],
) -> dict[str, Any]:
    apis = {inst.side: Api(http, inst.name, inst.url, pair.api_key) for inst in pair.both}
    await settle(apis)
    before = await statuses(apis)
    candidates = sorted(created & feeds["a"].keys() & feeds["b"].keys())
    k = min(len(candidates), round(len(created) * args.edit_share))
    chosen = random.Random(args.seed + 1).sample(candidates, k)
    number = {order_id: i for i, order_id in enumerate(chosen)}
    edits_ok: dict[str, set[str]] = {side: set() for side in SIDES}
    refused: list[dict[str, Any]] = []
    notes = {"a": "edited on A", "b": "edited on B"}
    status = {"a": "confirmed", "b": "paid"}

    async def edit(job: tuple[str, str]) -> None:
        side, order_id = job
        order = feeds[side][order_id]
        body = edit_body(order, notes=f"{notes[side]}, #{number[order_id]}", status=status[side])
        code, answer = await apis[side].put(order_id, body, order["version"])
        if code == 200:
            edits_ok[side].add(order_id)
        else:
            refused.append({"side": side, "id": order_id, "status": code, "answer": answer})

    # Both edits of an order next to each other: they go out together.
    jobs = [(side, order_id) for order_id in chosen for side in SIDES]
    print(
        f"phase 2: A and B restarted with rounds on demand; editing {k} orders on both sides at once "
        f"({len(jobs)} PUTs, {args.clients} clients)"
    )
    cpu0 = Cpu.take(pair)
    t0 = time.perf_counter()
    await run_clients(args.clients, jobs, edit)
    edit_s = time.perf_counter() - t0
    made = edits_ok["a"] & edits_ok["b"]
    print(
        f"phase 2: {len(edits_ok['a'])} edits on A, {len(edits_ok['b'])} on B in {edit_s:.2f} s; "
        f"{len(refused)} refused; {len(made)} orders edited on both sides: collisions made"
    )

    def detected(a: dict[str, Any], b: dict[str, Any], rounds: dict[str, int]) -> bool:
        return a["pending_push"] == 0 and b["pending_push"] == 0 and min(rounds.values()) >= 1

    t_detect = time.perf_counter()
    watch_detect = await converge(
        pair, apis, detected, label="phase 2 detect", t0=t_detect, drive=True, args=args
    )
    assert watch_detect.seconds is not None
    found = {side: count(watch_detect.status[side], "ST_COLLISION") for side in SIDES}
    feeds2, heads = await read_both(apis)
    collided = {
        side: {i for i, o in feeds2[side].items() if o["sync_state"] == "ST_COLLISION"} for side in SIDES
    }
    # Nothing overwritten: each side still holds its own edit.
    kept = {
        side: sum(1 for i in made if feeds2[side][i]["notes"] == f"{notes[side]}, #{number[i]}")
        for side in SIDES
    }
    print(
        f"phase 2: collisions found A {found['a']}, B {found['b']} of {len(made)} made "
        f"(in {watch_detect.seconds:.2f} s, rounds A {watch_detect.rounds['a']} B {watch_detect.rounds['b']}); "
        f"the edited orders among them: A {len(collided['a'] & made)}, B {len(collided['b'] & made)}; "
        f"own edit kept: A {kept['a']}, B {kept['b']}"
    )
    quiet_detect = await quiet_check(apis, heads, loop_seconds=None)
    print(f"phase 2: {quiet_text(quiet_detect)}")

    resolved: set[str] = set()
    resolve_refused: list[dict[str, Any]] = []

    async def resolve(order_id: str) -> None:
        code, answer = await apis["a"].resolve(order_id, "local")
        if code == 200:
            resolved.add(order_id)
        else:
            resolve_refused.append({"id": order_id, "status": code, "answer": answer})

    t_resolve = time.perf_counter()
    await run_clients(args.clients, sorted(collided["a"]), resolve)
    resolve_s = time.perf_counter() - t_resolve
    total = len(feeds2["a"])

    def converged(a: dict[str, Any], b: dict[str, Any], rounds: dict[str, int]) -> bool:
        return (
            min(rounds.values()) >= 1
            and a["pending_push"] == 0
            and b["pending_push"] == 0
            and count(a, "ST_OK") == total
            and count(b, "ST_OK") == total
        )

    t_sync = time.perf_counter()
    watch_resolve = await converge(
        pair, apis, converged, label="phase 2 resolve", t0=t_sync, drive=True, args=args
    )
    assert watch_resolve.seconds is not None
    cpu1 = Cpu.take(pair)
    print(
        f"phase 2: {len(resolved)} collisions resolved on A (take local) in {resolve_s:.2f} s, "
        f"{len(resolve_refused)} refused; converged {watch_resolve.seconds:.2f} s later"
    )
    feeds3, heads = await read_both(apis)
    comparison = compare(feeds3["a"], feeds3["b"], created)
    winners = sum(1 for i in made if feeds3["b"].get(i, {}).get("notes") == f"{notes['a']}, #{number[i]}")
    print(f"phase 2: {comparison_text(comparison)}; A's edit on B: {winners} of {len(made)}")
    quiet = await quiet_check(apis, heads, loop_seconds=None)
    print(f"phase 2: {quiet_text(quiet)}")
    after = await statuses(apis)
    across = crossed(before, after)
    changes = len(edits_ok["a"]) + len(edits_ok["b"]) + len(resolved)
    writes = sum(across["pushed"].values())
    print(
        f"phase 2: {changes} changes ({len(edits_ok['a']) + len(edits_ok['b'])} edits, {len(resolved)} "
        f"resolutions); across: A pushed {across['pushed']['a']}, B pushed {across['pushed']['b']} "
        f"({writes / changes if changes else 0:.3f} writes per change); feed items read: "
        f"A {across['pulled']['a']}, B {across['pulled']['b']}"
    )
    window = cpu_window(cpu0, cpu1)
    return {
        "edited": k,
        "edits_ok": {s: len(v) for s, v in edits_ok.items()},
        "edit_s": round(edit_s, 3),
        "refused": refused[:20],
        "refused_count": len(refused),
        "collisions_made": len(made),
        "collisions_found": found,
        "collided_edited": {s: len(collided[s] & made) for s in SIDES},
        "collided_other": {s: len(collided[s] - made) for s in SIDES},
        "own_edit_kept": kept,
        "detect_s": round(watch_detect.seconds, 3),
        "detect_rounds": watch_detect.rounds,
        "quiet_after_detect": quiet_detect,
        "resolved": len(resolved),
        "resolve_refused": resolve_refused[:20],
        "resolve_s": round(resolve_s, 3),
        "resolution_sync_s": round(watch_resolve.seconds, 3),
        "resolution_rounds": watch_resolve.rounds,
        "winner_on_b": winners,
        "comparison": comparison.as_dict(),
        "quiet": quiet,
        "changes": changes,
        "across": across,
        "writes_per_change": round(writes / changes, 4) if changes else None,
        "cpu": window,
        "progress": watch_detect.progress + watch_resolve.progress,
        "_comparison": comparison,
    }


# --------------------------------------------------------------------------------- report


def log_problems(children: Children) -> dict[str, Any]:
    """Warnings and errors the instances logged, by level; a failed round is a warning. Rounds
    that found the peer not listening (a start or a restart) are counted apart."""
    out: dict[str, Any] = {}
    for child in children.children:
        try:
            lines = child.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        seen: dict[str, Any] = {"peer_not_up": 0, "levels": {}, "examples": []}
        for line in lines:
            try:
                entry = json.loads(line)
                level, message = str(entry.get("level")), str(entry.get("message"))
            except ValueError:
                level, message = "OUTPUT", line
            if "ConnectError" in message:
                seen["peer_not_up"] += 1
                continue
            seen["levels"][level] = seen["levels"].get(level, 0) + 1
            if len(seen["examples"]) < 3:
                seen["examples"].append(message[:400])
        out[child.name] = seen
    return out


def judge(p1: dict[str, Any], p2: dict[str, Any] | None) -> tuple[list[tuple[str, str, bool]], bool]:
    """(name, figure, passed) per target, and whether the copies ended equal."""
    final: Comparison = (
        p2["_comparison"] if p2 else compare(p1["_feeds"]["a"], p1["_feeds"]["b"], p1["_created"])
    )
    lost = len(final.lost)
    rate = p1["orders_per_s"]
    since = "the first round, creation done (--gate)" if p1["mode"] == "gate" else "the first create"
    rows = [
        (
            "orders/s",
            f"{rate:.0f} orders synced per second ({p1['orders']} orders / {since} to converged; target >= "
            f"{TARGET_ORDERS_PER_S:.0f})",
            rate >= TARGET_ORDERS_PER_S,
        ),
        ("orders lost", f"{lost} created on B and missing on A at the end (target 0)", lost == 0),
    ]
    if p2 is not None:
        made, found = p2["collisions_made"], p2["collisions_found"]
        hit = {s: p2["collided_edited"][s] for s in SIDES}
        rows.append(
            (
                "collisions",
                f"found A {found['a']}, B {found['b']} of {made} made "
                f"(the edited orders among them: A {hit['a']}, B {hit['b']})",
                made > 0 and all(found[s] == made == hit[s] for s in SIDES),
            )
        )
    changes = p1["changes"] + (p2["changes"] if p2 else 0)
    writes = sum(p1["across"]["pushed"].values()) + (sum(p2["across"]["pushed"].values()) if p2 else 0)
    factor = writes / changes if changes else 0.0
    quiet = p1["quiet"]["quiet"] and (
        p2 is None or (p2["quiet"]["quiet"] and p2["quiet_after_detect"]["quiet"])
    )
    rows.append(
        (
            "echo factor",
            f"{factor:.3f} writes sent across per change ({writes} pushes / {changes} changes; target <= "
            f"{TARGET_ECHO:.1f}); after each convergence {'nothing crossed' if quiet else 'SOMETHING CROSSED'}",
            factor <= TARGET_ECHO and quiet,
        )
    )
    equal = not (final.differing or final.only_on_a or final.only_on_b)
    return rows, equal


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sync", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10_000, help="orders created on B (default 10000)")
    parser.add_argument(
        "--edit-share", type=float, default=0.1, help="share of the orders edited on both sides (default 0.1)"
    )
    parser.add_argument("--batch", type=int, default=None, help="SYNC_BATCH_SIZE (default: the app's)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="SYNC_PUSH_CONCURRENCY (default: the app's)"
    )
    parser.add_argument(
        "--clients", type=int, default=32, help="concurrent API clients creating and editing (default 32)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.2, help="SYNC_INTERVAL in phase 1, seconds (default 0.2)"
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help="phase 1: create every order with the loops idle, then time the sync alone",
    )
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between status polls (default 0.2)")
    parser.add_argument(
        "--quiet", type=float, default=2.0, help="seconds of loop rounds checked for echoes (default 2)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes per instance (default 1); several share a round by the Redis lease",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per convergence (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the order ids and the edited share")
    parser.add_argument("--skip-edits", action="store_true", help="phase 1 only")
    add_server_args(parser)
    parser.add_argument(
        "--verbose", action="store_true", help="print the database backends' states each second"
    )
    parser.add_argument("--keep-db", action="store_true", help="do not drop the two databases")
    parser.add_argument("--keep-logs", action="store_true", help="keep the instances' logs (kept on failure)")
    parser.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    args = parser.parse_args(argv)
    if args.orders < 1 or args.clients < 1 or not 0 <= args.edit_share <= 1:
        parser.error("--orders and --clients must be >= 1, --edit-share within 0..1")
    if (args.batch is not None and args.batch < 1) or (args.concurrency is not None and args.concurrency < 1):
        parser.error("--batch and --concurrency must be >= 1")
    return args


def app_defaults() -> dict[str, Any]:
    from app.settings import Settings

    fields = Settings.model_fields
    return {k: fields[k].default for k in ("sync_batch_size", "sync_push_concurrency", "database_pool_size")}


async def run_phases(pair: Pair, args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=args.timeout)
    connector = aiohttp.TCPConnector(limit=args.clients + 16)
    db0 = await db_stats(pair)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        p1 = await phase_create(pair, args, http)
    # Stopped, their backends exit and flush their statistics: the phase's database work.
    pair.stop()
    db1 = await db_stats(pair)
    p1["db"] = db_work(db0, db1, p1["orders"])
    print(f"phase 1: database work, creation included: {db_text(p1['db'], 'order')}")
    if p1["_db_sync0"] is not None:
        p1["db_sync"] = db_work(p1["_db_sync0"], db1, p1["orders"])
        print(f"phase 1: database work of the sync alone (--gate): {db_text(p1['db_sync'], 'order')}")
    p2 = None
    if not args.skip_edits and args.edit_share > 0:
        pair.start(ON_DEMAND)
        connector = aiohttp.TCPConnector(limit=args.clients + 16)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            p2 = await phase_edit(pair, args, http, p1["_feeds"], p1["_created"])
        pair.stop()
        db2 = await db_stats(pair)
        p2["db"] = db_work(db1, db2, p2["changes"])
        print(f"phase 2: database work: {db_text(p2['db'], 'change')}")
    return p1, p2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    line_buffered_stdout()
    run_id = secrets.token_hex(4)
    stamp = utc_stamp()
    prefix = f"sluicebench-sync-{run_id}:"
    api_key = "bench-" + secrets.token_urlsafe(24)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    children = Children(log_dir)
    pair = Pair(args, children, run_id, api_key, prefix)
    defaults = app_defaults()
    batch = args.batch or defaults["sync_batch_size"]
    concurrency = args.concurrency or defaults["sync_push_concurrency"]
    loadavg = os.getloadavg()
    code = git_state("app/orders")
    began = time.monotonic()
    print(
        f"code: HEAD {code.get('head')}"
        + (
            f"; app/orders changed since: {', '.join(code['changed_since_head'])}"
            if code.get("changed_since_head")
            else ""
        )
    )
    print(
        machine_line(loadavg)
        + f"; {args.orders} orders, edit share {args.edit_share:g}, SYNC_BATCH_SIZE {batch}, "
        f"SYNC_PUSH_CONCURRENCY {concurrency}, phase 1 "
        + (
            "--gate (rounds back to back after creation)"
            if args.gate
            else f"SYNC_INTERVAL {args.interval:g} s"
        )
    )
    created: list[str] = []
    failure: str | None = None
    interrupted = False
    p1: dict[str, Any] | None = None
    p2: dict[str, Any] | None = None
    try:
        with sigterm_as_sigint():
            for inst in pair.both:
                asyncio.run(create_database(args.postgres_url, inst.db_name))
                created.append(inst.db_name)
            pair.migrate(log_dir)
            pair.start(ON_DEMAND if args.gate else args.interval)
            print(
                f"databases {pair.a.db_name}, {pair.b.db_name}; A {pair.a.url} (pids {pair.a.pids}), "
                f"B {pair.b.url} (pids {pair.b.pids}); Redis prefix {prefix}"
            )
            p1, p2 = asyncio.run(run_phases(pair, args))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping A and B ...", file=sys.stderr)
    except (BenchError, OSError, aiohttp.ClientError, TimeoutError) as exc:
        failure = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        print(f"FAILED: {failure}", file=sys.stderr)
    finally:
        children.close()
        clear_redis_prefix(args.redis_url, prefix)
        if args.keep_db:
            for name in created:
                print(f"database kept: {database_url(args.postgres_url, name)}")
        else:
            drop_databases(args.postgres_url, created)
    if interrupted:
        return 130
    problems = log_problems(children)
    for name, seen in problems.items():
        if seen["levels"]:
            print(f"{name} logged {seen['levels']}; e.g. {seen['examples'][0]}")

    rows: list[tuple[str, str, bool]] = []
    equal = False
    if p1 is not None:
        rows, equal = judge(p1, p2)
        print()
        print(
            f"summary ({args.orders} orders, {os.cpu_count()} cores, "
            f"{args.workers} uvicorn worker{'s' if args.workers > 1 else ''} per instance)"
        )
        print(
            f"  create on B        {p1['create_per_s']:.0f} orders/s ({p1['create_s']:.2f} s, {args.clients} clients; "
            "not part of the sync figure)"
        )
        print(
            f"  phase 1 converged  {p1['converged_from_first_create_s']:.2f} s from the first create, "
            f"{p1['converged_after_last_create_s']:.2f} s after the last"
            + (
                f", {p1['converged_from_first_round_s']:.2f} s from the first round"
                if p1["converged_from_first_round_s"] is not None
                else ""
            )
            + (
                f"; A held every order at {p1['a_held_all_s']:.2f} s"
                if p1.get("a_held_all_s") is not None
                else ""
            )
        )
        if p2 is not None:
            print(
                f"  phase 2            {p2['collisions_made']} orders edited on both sides in {p2['edit_s']:.2f} s; "
                f"collisions found in {p2['detect_s']:.2f} s; {p2['resolved']} resolved, converged "
                f"{p2['resolution_sync_s']:.2f} s later"
            )
        for p, label in ((p1, "phase 1"), (p2, "phase 2")):
            if p is not None:
                pushed, pulled = p["across"]["pushed"], p["across"]["pulled"]
                print(
                    f"  {label} across     pushed A {pushed['a']} B {pushed['b']} for {p['changes']} changes "
                    f"({p['writes_per_change']:.3f}/change); feed items read A {pulled['a']} B {pulled['b']}"
                )
        print(f"  copies at the end  {'equal' if equal else 'NOT EQUAL'}")
        print()
        print("targets")
        for name, text, passed in rows:
            print(f"  {'PASS  ' if passed else 'MISSED'}  {name:<12} {text}")
    print(f"total time {time.monotonic() - began:.0f} s")

    def public(p: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if p is None else {k: v for k, v in p.items() if not k.startswith("_")}

    report = {
        "benchmark": "sync",
        "timestamp": stamp,
        "args": {k: v for k, v in vars(args).items() if k not in ("postgres_url", "redis_url")},
        "settings": {
            "sync_batch_size": batch,
            "sync_push_concurrency": concurrency,
            "sync_interval_phase1": ON_DEMAND if args.gate else args.interval,
            "database_pool_size": defaults["database_pool_size"],
        },
        "machine": machine_info(loadavg),
        "code": code,
        "phase1": public(p1),
        "phase2": public(p2),
        "targets": [{"name": n, "figure": t, "passed": ok} for n, t, ok in rows],
        "copies_equal": equal,
        "logged": problems,
        "failure": failure,
    }
    write_results("sync", stamp, report)
    if failure or not equal or args.keep_logs:
        print(f"logs: {log_dir}")
    if failure or not equal:
        return 1
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    if args.check and not all(ok for _, _, ok in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
