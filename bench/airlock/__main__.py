"""How fast the airlock drains calls that are due.

    python -m bench.airlock [--calls 10000] [--workers 2] [--concurrency 64] [--batch-size 100]
                            [--gate] [--no-commlog] [--cprofile] [--check]

1. Creates a fresh Postgres database `sluice_bench_airlock_<hex>` and migrates it
   (`python -m app migrate`).
2. Starts the fake partner (`bench/airlock/upstream.py`: the gateway bench's upstream plus
   `POST /v2/order`) and the reply receiver (`bench/airlock/receiver.py`), each in its own process.
3. Stores `--calls` calls in `async_call` with COPY: `create_purchase` (`POST /v1/purchases`),
   status CALL_RETRY, due now, `$reply` = the receiver.
4. Starts `--workers` Sluice processes (uvicorn, one worker each, every feature on), which drain
   the table, and measures from the first reply received until every reply has arrived and every
   row is DONE. With `--gate` the calls are stored due in a day, the workers are started and
   awaited, then every call is made due at once (UPDATE + NOTIFY): no start-up in the figures.
5. Prints replies/s, the receiver's counts (distinct webhook-ids, duplicates), the rows' statuses
   and the CPU time of each worker per call; writes bench/results/airlock-<UTC>.json.

Every child process is stopped and the database dropped on the way out (Ctrl-C and failures too).
Exit status: 0 ok, 1 the run failed (not drained in time, duplicates, a process died), 2 with
`--check` when replies/s missed the target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import RESULTS_DIR, ROOT
from bench.common.cpu import cpu_by_name, cpu_of, machine_ticks
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
    HEALTH_PATH,
    BenchError,
    Child,
    Children,
    check_sluice_present,
    first_exited,
    free_port,
    server_pid,
    sigterm_as_interrupt,
    sluice_env,
    start_fake_server,
    uvicorn_cmd,
    wait_ready,
)
from bench.common.results import line_buffered_stdout, machine_info, machine_line, utc_stamp, write_results

TARGET_REPLIES_PER_S = 1000.0
NOTIFY_CHANNEL = "sluice_airlock"  # app.airlock.service.NOTIFY_CHANNEL (not imported: no app import)

REQUEST_HEADERS = {"content-type": "application/json", "x-client-id": "bench", "x-language-id": "en"}
COLUMNS = (
    "id",
    "connector",
    "view_name",
    "method",
    "path",
    "path_params",
    "query_string",
    "request_headers",
    "content_type",
    "body",
    "api_client_id",
    "api_client_name",
    "org_id",
    "request_id",
    "status",
    "reply_url",
    "respond_async",
    "ttl",
    "delay",
    "next_try",
    "attempts",
    "created_at",
    "updated_at",
)


# ------------------------------------------------------------------------------- database


async def insert_calls(dsn: str, count: int, reply_url: str, due: datetime) -> float:
    """Store `count` purchase calls (COPY), then ANALYZE; the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    headers = orjson.dumps(REQUEST_HEADERS).decode()
    records = [
        (
            uuid.uuid4(),
            "partner",  # the connector: Sluice's PartnerClient is named "partner"
            "create_purchase",
            "POST",
            "/v1/purchases",
            "{}",
            "",
            headers,
            "application/json",
            orjson.dumps({"product_code": "PLN50", "customer_number": "0812345678", "ref_id": f"b-{i}"}),
            "bootstrap",
            "bench",
            "default",
            f"bench-{i}",
            "CALL_RETRY",
            reply_url,
            True,
            13,
            30.0,
            due,
            0,
            now,
            now,
        )
        for i in range(count)
    ]
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.copy_records_to_table("async_call", records=records, columns=COLUMNS)
        # Planner statistics, as autovacuum would have them on a table that has been in use.
        await conn.execute("ANALYZE async_call")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def release_calls(dsn: str) -> int:
    """`--gate`: make every stored call due now and wake the workers."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            done = await conn.execute("UPDATE async_call SET next_try = now()")
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    finally:
        await conn.close()
    return int(done.split()[-1])


async def status_counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM async_call GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def call_details(conn: asyncpg.Connection) -> dict[str, Any]:
    """After the run: attempts per phase and outcome, replies per worker process, attempts."""
    outcomes = await conn.fetch(
        "SELECT phase, outcome, count(*) AS n FROM async_call_log GROUP BY phase, outcome ORDER BY 1, 2"
    )
    by_worker = await conn.fetch(
        "SELECT substring(detail from '\\((.*)\\)') AS worker, count(*) AS n FROM async_call_log "
        "WHERE phase = 'reply' GROUP BY 1"
    )
    attempts = await conn.fetch("SELECT attempts, count(*) AS n FROM async_call GROUP BY 1 ORDER BY 1")
    return {
        "log_outcomes": {f"{r['phase']}/{r['outcome']}": r["n"] for r in outcomes},
        "replies_by_worker_id": {r["worker"]: r["n"] for r in by_worker},
        "attempts": {str(r["attempts"]): r["n"] for r in attempts},
    }


# ------------------------------------------------------------------------------- CPU time


@dataclass
class CpuSnapshot:
    at: float
    workers: list[float | None]
    upstream: float | None
    receiver: float | None
    postgres: float
    redis: float
    machine: tuple[int, int, int]

    @classmethod
    def take(cls, workers: list[int], upstream: int, receiver: int) -> CpuSnapshot:
        return cls(
            at=time.time(),
            workers=[cpu_of(pid) for pid in workers],
            upstream=cpu_of(upstream),
            receiver=cpu_of(receiver),
            postgres=cpu_by_name("postgres"),
            redis=cpu_by_name("redis-server"),
            machine=machine_ticks(),
        )


def _delta(a: float | None, b: float | None) -> float | None:
    return round(b - a, 3) if a is not None and b is not None else None


def cpu_between(start: CpuSnapshot, end: CpuSnapshot) -> dict[str, Any]:
    busy = end.machine[0] - start.machine[0]
    total = end.machine[1] - start.machine[1]
    return {
        "seconds": round(end.at - start.at, 3),
        "workers_s": [_delta(a, b) for a, b in zip(start.workers, end.workers, strict=True)],
        "upstream_s": _delta(start.upstream, end.upstream),
        "receiver_s": _delta(start.receiver, end.receiver),
        "postgres_s": _delta(start.postgres, end.postgres),
        "redis_s": _delta(start.redis, end.redis),
        "machine_busy": round(busy / total, 3) if total else None,
        "machine_steal": round((end.machine[2] - start.machine[2]) / total, 3) if total else None,
    }


# ---------------------------------------------------------------------------------- drain


@dataclass
class Drain:
    """What the measurement saw."""

    spawned_at: float
    t0: float | None = None  # first reply (default) or the release (--gate)
    first_reply_at: float | None = None
    last_reply_at: float | None = None
    done_seen_at: float | None = None
    received_at_t0: int = 0
    cpu_t0: CpuSnapshot | None = None
    cpu_end: CpuSnapshot | None = None
    receiver: dict[str, Any] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    progress: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None


class Monitor:
    def __init__(
        self,
        args: argparse.Namespace,
        dsn: str,
        receiver_url: str,
        workers: list[Child],
        upstream: Child,
        receiver: Child,
    ) -> None:
        self.args = args
        self.dsn = dsn
        self.receiver_url = receiver_url
        self.workers = workers
        self.pids = [server_pid(c) for c in workers]
        self.upstream = upstream
        self.receiver = receiver

    def snapshot(self) -> CpuSnapshot:
        return CpuSnapshot.take(self.pids, self.upstream.proc.pid, self.receiver.proc.pid)

    def dead(self) -> str | None:
        return first_exited((*self.workers, self.upstream, self.receiver))

    async def run(self, drain: Drain) -> None:
        calls = self.args.calls
        async with aiohttp.ClientSession() as http:

            async def receiver_stats() -> dict[str, Any]:
                async with http.get(f"{self.receiver_url}/_bench/stats") as response:
                    return dict(await response.json())

            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                if self.args.gate:
                    drain.cpu_t0 = self.snapshot()
                    drain.t0 = time.time()
                    released = await release_calls(self.dsn)
                    print(f"released {released} calls (UPDATE next_try = now(); NOTIFY)")
                # Wait for the first reply (the workers' start-up, or the wake-up after --gate).
                deadline = time.monotonic() + 90
                while True:
                    stats = await receiver_stats()
                    if stats["total"]:
                        break
                    if (why := self.dead()) is not None:
                        drain.failure = why
                        return
                    if time.monotonic() > deadline:
                        drain.failure = "no reply arrived within 90 s of the start; see the workers' logs"
                        return
                    await asyncio.sleep(0.01)
                if drain.t0 is None:
                    drain.cpu_t0 = self.snapshot()
                    drain.t0 = stats["first_at"]
                    drain.received_at_t0 = stats["total"]
                drain.first_reply_at = stats["first_at"]
                print(f"first reply {stats['first_at'] - drain.spawned_at:.2f} s after the workers' start")

                deadline = time.monotonic() + self.args.timeout
                last_print = last_db = time.monotonic()
                last_change = time.monotonic()
                last_seen = (-1, -1)
                counts: dict[str, int] = {}
                while True:
                    stats = await receiver_stats()
                    now = time.monotonic()
                    all_received = stats["distinct"] >= calls
                    if all_received or now - last_db >= 1.0:
                        counts = await status_counts(conn)
                        last_db = now
                    if all_received and counts.get("DONE", 0) >= calls:
                        drain.done_seen_at = time.time()
                        drain.cpu_end = self.snapshot()
                        break
                    seen = (stats["total"], counts.get("DONE", 0))
                    if seen != last_seen:
                        last_seen, last_change = seen, now
                    if now - last_print >= 1.0:
                        last_print = now
                        t = time.time() - (drain.t0 or drain.spawned_at)
                        done = counts.get("DONE", 0)
                        drain.progress.append({"t": round(t, 2), "replies": stats["total"], "done": done})
                        print(f"  {t:6.1f} s  replies {stats['total']:>7}/{calls}  rows DONE {done:>7}")
                    if (why := self.dead()) is not None:
                        drain.failure = why
                        break
                    if now > deadline:
                        drain.failure = f"not drained within --timeout {self.args.timeout} s"
                        break
                    if now - last_change > 30:
                        drain.failure = "no progress for 30 s"
                        break
                    await asyncio.sleep(0.02 if all_received else 0.05)
                drain.receiver = await receiver_stats()
                drain.last_reply_at = drain.receiver.get("last_at")
                drain.statuses = await status_counts(conn)
            finally:
                await conn.close()


# ---------------------------------------------------------------------------------- report


def worker_env(args: argparse.Namespace, upstream_url: str, db_url: str, prefix: str) -> dict[str, str]:
    overrides = {
        "REPLY_URL_ALLOW_LOOPBACK": "true",
        "RUN_WORKERS": "true",
        "TRACING_ENABLED": "true",
        "COMMLOG_ENABLED": "false" if args.no_commlog else "true",
        "AIRLOCK_CONCURRENCY": str(args.concurrency),
        "AIRLOCK_BATCH_SIZE": str(args.batch_size),
    }
    admin_key = "bench-" + secrets.token_urlsafe(24)
    return sluice_env(upstream_url, admin_key, db_url, args.redis_url, prefix, overrides)


def summarize(args: argparse.Namespace, drain: Drain, pids: list[int]) -> dict[str, Any]:
    calls = args.calls
    out: dict[str, Any] = {"calls": calls, "workers": args.workers}
    end = max(t for t in (drain.last_reply_at, drain.done_seen_at) if t is not None)
    if drain.t0 is not None:
        elapsed = end - drain.t0
        out["elapsed_s"] = round(elapsed, 3)
        out["replies_per_s"] = round(calls / elapsed, 1) if elapsed > 0 else None
    out["from_worker_start_s"] = round(end - drain.spawned_at, 3)
    out["replies_per_s_from_worker_start"] = round(calls / (end - drain.spawned_at), 1)
    if drain.first_reply_at is not None and drain.last_reply_at is not None:
        out["first_to_last_reply_s"] = round(drain.last_reply_at - drain.first_reply_at, 3)
    if drain.done_seen_at is not None and drain.last_reply_at is not None:
        out["last_reply_to_all_done_s"] = round(max(drain.done_seen_at - drain.last_reply_at, 0.0), 3)
    r = drain.receiver
    out["received"] = {
        k: r.get(k) for k in ("total", "distinct", "duplicates", "missing_id", "unsigned", "statuses")
    }
    out["rows"] = drain.statuses
    out["rows_done"] = drain.statuses.get("DONE", 0)
    if drain.cpu_t0 is not None and drain.cpu_end is not None:
        window = cpu_between(drain.cpu_t0, drain.cpu_end)
        window["calls"] = calls - drain.received_at_t0
        worker_total = sum(w for w in window["workers_s"] if w is not None)
        if window["calls"] > 0:
            window["worker_cpu_ms_per_call"] = round(worker_total / window["calls"] * 1000, 3)
            window["all_cpu_ms_per_call"] = round(
                (
                    worker_total
                    + sum(window[k] or 0.0 for k in ("upstream_s", "receiver_s", "postgres_s", "redis_s"))
                )
                / window["calls"]
                * 1000,
                3,
            )
        out["cpu_window"] = window
        out["worker_cpu_total_s"] = [cpu_of(pid) for pid in pids]
    out["worker_pids"] = pids
    out["progress"] = drain.progress  # once a second: seconds since t0, replies received, rows DONE
    return out


def print_report(args: argparse.Namespace, s: dict[str, Any], details: dict[str, Any]) -> None:
    since = "the release (--gate)" if args.gate else "the first reply"
    print()
    print(f"calls              {s['calls']}")
    print(f"workers            {s['workers']} (concurrency {args.concurrency}, batch {args.batch_size})")
    if "elapsed_s" in s:
        ok = "ok" if s["replies_per_s"] >= TARGET_REPLIES_PER_S else "MISSED"
        print(f"elapsed            {s['elapsed_s']:.2f} s (from {since} to all replies in and all rows DONE)")
        print(f"replies/s          {s['replies_per_s']:.0f} (target >= {TARGET_REPLIES_PER_S:.0f}: {ok})")
    print(
        f"from worker start  {s['from_worker_start_s']:.2f} s, "
        f"{s['replies_per_s_from_worker_start']:.0f} replies/s (start-up included)"
    )
    rec = s["received"]
    print(
        f"received           {rec['total']} total, {rec['distinct']} distinct webhook-ids, "
        f"{rec['duplicates']} duplicates, {rec['unsigned']} unsigned, envelope status {rec['statuses']}"
    )
    print(f"rows               DONE {s['rows_done']}  (all: {s['rows']})")
    if "last_reply_to_all_done_s" in s:
        print(f"last reply -> DONE {s['last_reply_to_all_done_s'] * 1000:.0f} ms (seen by polling)")
    window = s.get("cpu_window")
    if window:
        per_worker = ", ".join(
            f"#{i + 1} {w:.2f} s" if w is not None else f"#{i + 1} -"
            for i, w in enumerate(window["workers_s"])
        )
        print(
            f"worker CPU         {per_worker} over {window['seconds']:.2f} s, {window['calls']} calls -> "
            f"{window.get('worker_cpu_ms_per_call', float('nan')):.3f} ms/call"
        )
        others = ", ".join(
            f"{k.removesuffix('_s')} {window[k]:.2f} s"
            for k in ("upstream_s", "receiver_s", "postgres_s", "redis_s")
            if window[k] is not None
        )
        busy = window["machine_busy"]
        print(
            f"other CPU          {others}; all processes "
            f"{window.get('all_cpu_ms_per_call', float('nan')):.3f} ms/call; "
            f"machine busy {busy * 100 if busy is not None else float('nan'):.0f} % of {os.cpu_count()} cores "
            f"(steal {(window['machine_steal'] or 0) * 100:.0f} %)"
        )
    replies = details.get("replies_by_worker", {})
    if replies:
        print("replies per worker " + ", ".join(f"{k} {v}" for k, v in replies.items()))
    if details.get("log_outcomes"):
        print("attempts (log)     " + ", ".join(f"{k} {v}" for k, v in details["log_outcomes"].items()))
    upstream = details.get("upstream")
    if upstream:
        print(
            f"partner            {upstream['orders']} orders ({upstream['distinct_ref_ids']} distinct ref_id), "
            f"{upstream['tokens']} token requests, {upstream['unauthenticated']} orders without a valid token"
        )


def judge(args: argparse.Namespace, s: dict[str, Any]) -> list[str]:
    """What makes the run invalid (empty: valid)."""
    problems = []
    rec = s["received"]
    if rec["distinct"] != args.calls:
        problems.append(f"{rec['distinct']} distinct webhook-ids received, expected {args.calls}")
    if rec["duplicates"]:
        problems.append(f"{rec['duplicates']} duplicate replies")
    if rec["missing_id"]:
        problems.append(f"{rec['missing_id']} replies without a webhook-id")
    if s["rows_done"] != args.calls:
        problems.append(f"{s['rows_done']} rows DONE, expected {args.calls}")
    return problems


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.airlock",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=10_000, help="calls to drain (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="Sluice worker processes (default 2)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="AIRLOCK_CONCURRENCY of each worker (default 64)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=100, help="AIRLOCK_BATCH_SIZE of each worker (default 100)"
    )
    parser.add_argument(
        "--gate",
        action="store_true",
        help="store the calls due later, start the workers, then make them all due at once",
    )
    parser.add_argument("--no-commlog", action="store_true", help="COMMLOG_ENABLED=false (default: on)")
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="run the workers under cProfile (slower!); profiles go to bench/results/",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to drain (default 300)")
    add_server_args(parser)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--check", action="store_true", help="exit 2 when replies/s misses the target")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.workers < 1 or args.concurrency < 1 or args.batch_size < 1:
        parser.error("--calls, --workers, --concurrency and --batch-size must be >= 1")
    return args


def print_profile(path: Path, lines: int = 30) -> None:
    import pstats

    if not path.is_file():
        print(f"(no profile at {path})")
        return
    print(f"\n--- {path.relative_to(ROOT)}: top {lines} by cumulative time ---")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(lines)
    print(f"--- {path.relative_to(ROOT)}: top {lines} by own time ---")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    line_buffered_stdout()
    stamp = utc_stamp()
    run_id = secrets.token_hex(4)
    db_name = f"sluice_bench_airlock_{run_id}"
    db_url = database_url(args.postgres_url, db_name)
    dsn = asyncpg_dsn(db_url)
    prefix = f"sluicebench-airlock:{run_id}:"
    loadavg_start = os.getloadavg()
    print(
        f"airlock drain: {args.calls} calls, {args.workers} workers (concurrency {args.concurrency}, "
        f"batch {args.batch_size}), commlog {'off' if args.no_commlog else 'on'}, tracing on"
        + (", gated start" if args.gate else "")
        + (", under cProfile" if args.cprofile else "")
    )
    print(machine_line(loadavg_start))

    log_dir = Path(tempfile.mkdtemp(prefix="bench-airlock-"))
    children = Children(log_dir)
    created = False
    failure: str | None = None
    interrupted = False
    summary: dict[str, Any] = {}
    details: dict[str, Any] = {}
    profiles: list[Path] = []
    workers: list[Child] = []
    pids: list[int] = []
    try:
        with sigterm_as_interrupt():
            check_sluice_present()
            asyncio.run(create_database(args.postgres_url, db_name))
            created = True
            # Both start while the database is migrated; they are awaited after.
            upstream, upstream_url = start_fake_server(
                children, "upstream", "bench.airlock.upstream", wait=False
            )
            receiver, receiver_url = start_fake_server(
                children, "receiver", "bench.airlock.receiver", wait=False
            )
            env = worker_env(args, upstream_url, db_url, prefix)
            migrate(env, log_dir)
            wait_ready(upstream, upstream_url + HEALTH_PATH)
            wait_ready(receiver, receiver_url + HEALTH_PATH)
            due = datetime.now(UTC) + (timedelta(days=1) if args.gate else timedelta(0))
            took = asyncio.run(insert_calls(dsn, args.calls, f"{receiver_url}/reply", due))
            print(f"database {db_name}: migrated, {args.calls} calls stored in {took:.2f} s")

            ports = []
            spawned_at = time.time()
            for i in range(args.workers):
                port = free_port()
                ports.append(port)
                cmd = uvicorn_cmd("app.main:create_app", port, factory=True)
                if args.cprofile:
                    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
                    profiles.append(RESULTS_DIR / f"airlock-{stamp}-worker{i + 1}.prof")
                    # cmd is [python, -m, uvicorn, app, options...]
                    cmd = [cmd[0], "-m", "bench.airlock.profiled", str(profiles[-1]), *cmd[3:]]
                workers.append(children.start(f"sluice-{i + 1}", cmd, env))
            if args.gate:
                for child, port in zip(workers, ports, strict=True):
                    wait_ready(child, f"http://127.0.0.1:{port}/health/live")
                time.sleep(1.0)  # the delivery loops' LISTEN connections
            drain = Drain(spawned_at=spawned_at)
            monitor = Monitor(args, dsn, receiver_url, workers, upstream, receiver)
            pids = monitor.pids
            print(f"workers: pids {', '.join(map(str, pids))}")
            asyncio.run(monitor.run(drain))
            if drain.failure:
                raise BenchError(drain.failure)
            summary = summarize(args, drain, pids)

            async def collect() -> None:
                conn = await asyncpg.connect(dsn, timeout=10)
                try:
                    details.update(await call_details(conn))
                finally:
                    await conn.close()
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{upstream_url}/_bench/order-stats") as response,
                ):
                    details["upstream"] = await response.json()

            asyncio.run(collect())
            by_pid = {str(pid): f"#{i + 1}" for i, pid in enumerate(pids)}
            details["replies_by_worker"] = {
                by_pid.get(m.group(1), key) if (m := re.search(r":(\d+):", key or "")) else str(key): n
                for key, n in sorted(details["replies_by_worker_id"].items(), key=lambda kv: str(kv[0]))
            }
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping child processes ...", file=sys.stderr)
    except (BenchError, OSError, asyncpg.PostgresError) as exc:
        failure = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BenchError) else str(exc)
        print(f"FAILED: {failure}", file=sys.stderr)
    finally:
        children.close()
        clear_redis_prefix(args.redis_url, prefix)
        if created and not args.keep_db:
            drop_databases(args.postgres_url, [db_name])
        elif created:
            print(f"database kept: {db_url}")

    if interrupted:
        return 130
    if failure is not None:
        print(f"logs: {log_dir}")
        return 1

    print_report(args, summary, details)
    problems = judge(args, summary)
    for problem in problems:
        print(f"INVALID RUN: {problem}")
    report = {
        "benchmark": "airlock",
        "timestamp": stamp,
        "config": {
            "calls": args.calls,
            "workers": args.workers,
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
            "commlog": not args.no_commlog,
            "tracing": True,
            "gate": args.gate,
            "cprofile": args.cprofile,
        },
        "measured_from": "release" if args.gate else "first_reply",
        "target_replies_per_s": TARGET_REPLIES_PER_S,
        "machine": machine_info(loadavg_start),
        "summary": summary,
        "details": details,
        "problems": problems,
    }
    write_results("airlock", stamp, report)
    for path in profiles[:1]:
        print_profile(path)
    if problems:
        print(f"logs: {log_dir}")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    if args.check and summary.get("replies_per_s", 0) < TARGET_REPLIES_PER_S:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
