"""Deployed throttling configurations under full load: rate held, busiest second, limiter cost.

    python -m bench.throttle [--rates 200,1000,5000] [--duration 10] [--concurrency 64] [--check]

1. Creates a fresh Postgres database `sluice_bench_throttle_<hex>` and migrates it
   (`python -m app migrate`); Redis keys go under a per-run prefix.
2. Starts the fake partner (`bench/throttle/upstream.py`), which notes the arrival time of every
   call, and `--workers` load processes (`bench/throttle/driver.py`), each with Sluice's
   `PartnerClient` and `ThrottleGate`, as the lifespan builds them.
3. Times the limiter alone in the first load process (`admit()` with and without a rule, Redis PING).
4. Phases, one after the other, all processes starting together:
   - `unthrottled`: no configuration, `--concurrency` tasks per process calling as fast as they
     can (closed loop): what the machine can do through the full client;
   - for each rate N: a configuration (urlPattern `<partner>/v2/*`, methods GET, maxThroughput N)
     is created and deployed through `app.throttling.service` and announced as the API does
     (`ThrottleGate.changed()`: the processes reload by pub/sub), then the processes call as fast
     as they can for `--duration` seconds (`limit N`); then, with no configuration, the same
     processes send the rate the limiter let through, spaced locally (`paced N`), for
     `--paced-duration` seconds: the CPU difference between the two is the limiter's cost.
5. Prints, per phase, the rate the partner saw over the steady part (the first and last 0.5 s
   left out), the busiest one-second window (exact, sliding), the CPU per call of the load
   processes and the Redis round trips per call, then each target PASS or MISSED; writes
   bench/results/throttle-<UTC>.json.

Every child process is stopped, the database dropped and the Redis keys deleted on the way out
(Ctrl-C and failures too). Exit status: 0 ok, 1 the run failed, 2 with `--check` when a target
was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import select
import shutil
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.common.cpu import cpu_by_name, cpu_of, machine_ticks
from bench.common.database import (
    add_server_args,
    clear_redis_prefix,
    create_database,
    database_url,
    drop_databases,
    migrate,
)
from bench.common.processes import BenchError, Child, Children, sigterm_as_interrupt, start_fake_server
from bench.common.results import (
    git_state,
    line_buffered_stdout,
    machine_info,
    machine_line,
    utc_stamp,
    write_results,
)

DEFAULT_RATES = "200,1000,5000"
UNTHROTTLED_ORG = "bench-unthrottled"
TRIM = 0.5  # seconds left out at each end of a phase for the steady rate
RATE_TOLERANCE = 0.01  # the issue's target: within ±1 % of maxThroughput
START_DELAY = 0.4  # seconds between sending a phase and its common start
REPLY_TIMEOUT = 60.0


# ------------------------------------------------------------------------------ processes


class Worker:
    """A load process (bench/throttle/driver.py): JSON commands in, one JSON line back."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.buffer = b""
        self.pid = child.proc.pid

    def send(self, cmd: dict[str, Any]) -> None:
        stdin = self.child.proc.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(cmd) + "\n").encode())
            stdin.flush()
        except BrokenPipeError as exc:
            raise BenchError(f"{self.child.name} is gone.\n{self.child.tail()}") from exc

    def receive(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        stdout = self.child.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(
                    f"{self.child.name} did not answer within {timeout:.0f} s.\n{self.child.tail()}"
                )
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise BenchError(
                        f"{self.child.name} exited (code {self.child.proc.poll()}).\n{self.child.tail()}"
                    )
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise BenchError(f"{self.child.name}: {message['error']}\n{self.child.tail()}")
        return message


def start_worker(children: Children, index: int, env: dict[str, str], concurrency: int) -> Worker:
    cmd = [
        sys.executable,
        "-m",
        "bench.throttle.driver",
        "--index",
        str(index),
        "--warm-connections",
        str(concurrency),
    ]
    return Worker(children.start(f"driver-{index + 1}", cmd, env, pipes=True))


def ask(
    workers: list[Worker], cmds: list[dict[str, Any]], timeout: float = REPLY_TIMEOUT
) -> list[dict[str, Any]]:
    """Send each worker its command (all first, so they run together), then read every answer."""
    for worker, cmd in zip(workers, cmds, strict=True):
        worker.send(cmd)
    return [worker.receive(timeout) for worker in workers]


def take_arrivals(upstream_url: str) -> list[float]:
    request = urllib.request.Request(f"{upstream_url}/_bench/arrivals", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    times = array("d")
    times.frombytes(body)
    if sys.byteorder != "little":
        times.byteswap()
    return times.tolist()


def upstream_tokens(upstream_url: str) -> int:
    with urllib.request.urlopen(f"{upstream_url}/_bench/stats", timeout=10) as response:
        return int(json.loads(response.read())["tokens"])


def redis_evalsha_calls(redis_url: str) -> int | None:
    """EVALSHA commands the Redis server has run (all clients: a cross-check of our own count)."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
        finally:
            client.close()
    except redis.RedisError:
        return None
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


# ------------------------------------------------------------------------------ deploying


def settings_for(db_url: str, redis_url: str, prefix: str, upstream_url: str) -> Any:
    from app.settings import Settings

    return Settings(
        database_url=db_url, redis_url=redis_url, redis_key_prefix=prefix, partner_base_url=upstream_url
    )


async def deploy(settings: Any, org: str, rate: int, upstream_url: str) -> dict[str, Any]:
    """Create and deploy a configuration as the API does, then announce it; its uid and version."""
    import orjson

    from app.clients.service import Principal
    from app.db import create_engine, create_sessionmaker
    from app.redis import create_redis
    from app.throttling import service
    from app.throttling.limiter import ThrottleGate

    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    redis = create_redis(settings)
    try:
        principal = Principal(
            id="bench-throttle", name="bench/throttle", org_id=org, scopes=frozenset({"throttling"})
        )
        body = {
            "name": f"bench {rate}/s",
            "urlPattern": f"{upstream_url}/v2/*",
            "methods": ["GET"],
            "maxThroughput": rate,
        }
        data = service.parse_body(orjson.dumps(body))  # the API's own validation
        async with sessionmaker.begin() as session:
            config = service.new_config(data, principal, "prod")
            session.add(config)
            await session.flush()
            check = service.can_deploy(config)
            if check.get("validationStatus") != "ok":
                raise BenchError(f"the {rate}/s configuration cannot be deployed: {check}")
            await service.deploy(session, config, principal)
        gate = ThrottleGate(settings, redis, sessionmaker)
        announced = time.perf_counter()
        await gate.changed()
        return {
            "uid": config.uid,
            "version": gate.seen_version,
            "announce_ms": (time.perf_counter() - announced) * 1000,
        }
    finally:
        await redis.aclose()
        await engine.dispose()


# ------------------------------------------------------------------------------ phases


@dataclass
class Phase:
    name: str
    org: str
    mode: str  # "closed" | "paced"
    duration: float
    limit: int | None = None  # the deployed maxThroughput (limit phases)
    rate: float | None = None  # the total paced rate (paced phases)
    deploy: dict[str, Any] | None = None
    propagation: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return total


def run_phase(
    phase: Phase, workers: list[Worker], upstream: Child, upstream_url: str, args: argparse.Namespace
) -> None:
    from bench.throttle.figures import arrival_figures

    take_arrivals(upstream_url)  # forget anything before
    evalsha0 = redis_evalsha_calls(args.redis_url)
    cpu0 = {
        "upstream": cpu_of(upstream.proc.pid),
        "redis": cpu_by_name("redis-server"),
        "postgres": cpu_by_name("postgres"),
    }
    machine0 = machine_ticks()
    start_at = time.time() + START_DELAY
    cmd = {
        "cmd": "run",
        "phase": phase.name,
        "org": phase.org,
        "mode": phase.mode,
        "rate": (phase.rate or 0) / len(workers),
        "concurrency": args.concurrency,
        "start_at": start_at,
        "duration": phase.duration,
    }
    replies = ask(workers, [cmd] * len(workers), timeout=phase.duration + REPLY_TIMEOUT)
    machine1 = machine_ticks()
    cpu1 = {
        "upstream": cpu_of(upstream.proc.pid),
        "redis": cpu_by_name("redis-server"),
        "postgres": cpu_by_name("postgres"),
    }
    evalsha1 = redis_evalsha_calls(args.redis_url)
    times = take_arrivals(upstream_url)

    fig = arrival_figures(times, start_at, phase.duration, phase.limit, TRIM)
    releases: list[float] = []
    for r in replies:
        chunk = array("d")
        chunk.frombytes(base64.b64decode(r.pop("releases", "") or ""))
        releases.extend(chunk)
    if phase.limit and releases:
        fig["released"] = arrival_figures(releases, start_at, phase.duration, phase.limit, TRIM)
        del fig["released"]["aligned_seconds"]
    ok = sum(r["ok"] for r in replies)
    attempts = sum(r["attempts"] for r in replies)
    commands = merge([r["commands"] for r in replies])
    outcomes = merge([r["outcomes"] for r in replies])
    call_commands = {k.split(":", 1)[1]: v for k, v in commands.items() if k.startswith("calls:")}
    rules_commands = {k.split(":", 1)[1]: v for k, v in commands.items() if k.startswith("rules:")}
    wall = max(r["wall_s"] for r in replies)
    worker_cpu = sum(r["cpu_s"] for r in replies)
    busy = machine1[0] - machine0[0]
    total = machine1[1] - machine0[1]
    waited, immediate = outcomes.get("waited", 0), outcomes.get("immediate", 0)

    def per_call(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or not ok else (b - a) / ok * 1e6

    fig.update(
        concurrency=args.concurrency * len(workers),
        ok=ok,
        attempts=attempts,
        throttled=sum(r["throttled"] for r in replies),
        errors=merge([r["errors"] for r in replies]),
        cancelled=sum(r["cancelled"] for r in replies),
        late_start_ms=max(r["late_start_ms"] for r in replies),
        drain_s=max(r["drain_s"] for r in replies),
        wall_s=wall,
        worker_cpu_s=worker_cpu,
        worker_cpu_us_per_call=worker_cpu / ok * 1e6 if ok else None,
        worker_cpu_share=[r["cpu_s"] / r["wall_s"] for r in replies],
        upstream_cpu_us_per_call=per_call(cpu0["upstream"], cpu1["upstream"]),
        redis_cpu_us_per_call=per_call(cpu0["redis"], cpu1["redis"]),
        machine_busy=busy / total if total else None,
        call_commands=call_commands,
        rules_commands=rules_commands,
        round_trips_per_call=sum(call_commands.values()) / attempts if attempts else None,
        evalsha_per_call=call_commands.get("EVALSHA", 0) / attempts if attempts else None,
        rules_commands_per_s=sum(rules_commands.values()) / wall / len(workers) if wall else None,
        server_evalsha=None if evalsha0 is None or evalsha1 is None else evalsha1 - evalsha0,
        script_p50_us=max((r["script"].get("p50_us", 0) for r in replies), default=0),
        script_p99_us=max((r["script"].get("p99_us", 0) for r in replies), default=0),
        script_max_us=max((r["script"].get("max_us", 0) for r in replies), default=0),
        outcomes=outcomes,
        waited_share=waited / (waited + immediate) if waited + immediate else None,
        rule=replies[0]["rule"],
        per_worker_ok=[r["ok"] for r in replies],
    )
    phase.figures = fig


def progress(phase: Phase) -> str:
    f = phase.figures
    text = f"{phase.name:<18} {f['rate']:>8.1f}/s steady, {f['ok']} calls, worst 1-s window {f['worst_1s']}"
    if phase.limit:
        text += f" (limit {phase.limit}), {f['round_trips_per_call']:.3f} Redis round trips/call"
    text += f", worker CPU {fmt(f['worker_cpu_us_per_call'], '.0f')} µs/call, machine {pct(f['machine_busy'])} busy"
    return text


# ------------------------------------------------------------------------------ report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def print_table(phases: list[Phase]) -> None:
    print()
    print(
        f"{'phase':<18} {'tasks':>5} {'calls':>6} {'rate/s':>8} {'x limit':>7} {'worst 1s':>8} "
        f"{'over':>4} {'.1s x10':>7} {'rel 1s':>6} {'waited':>6} {'cpu µs':>6} {'RT/call':>7} "
        f"{'EVALSHA µs p50/p99':>19}"
    )
    for p in phases:
        f = p.figures
        if not f:
            print(f"{p.name:<18} (not run)")
            continue
        ratio = fmt(f.get("ratio"), ".3f")
        over = str(f.get("windows_over", "-"))
        script = "-"
        if f["evalsha_per_call"]:
            script = f"{f['script_p50_us']:.0f} / {f['script_p99_us']:.0f}"
        print(
            f"{p.name:<18} {f['concurrency']:>5} {f['ok']:>6} {f['rate']:>8.1f} {ratio:>7} {f['worst_1s']:>8} "
            f"{over:>4} {f['worst_100ms'] * 10:>7} {(f.get('released') or {}).get('worst_1s', '-'):>6} "
            f"{pct(f['waited_share']):>6} "
            f"{fmt(f['worker_cpu_us_per_call'], '.0f'):>6} {fmt(f['round_trips_per_call'], '.3f'):>7} {script:>19}"
        )


def judge(phases: list[Phase], unthrottled: Phase | None) -> tuple[list[str], bool]:
    """The lines about the targets, and whether every target was met."""
    capacity = unthrottled.figures.get("rate") if unthrottled and unthrottled.figures else None
    lines: list[str] = []
    all_ok = True
    for p in phases:
        if not p.limit or not p.figures:
            continue
        f = p.figures
        n = p.limit
        rate_ok = abs(f["ratio"] - 1) <= RATE_TOLERANCE
        window_ok = f["worst_1s"] <= n
        rt_ok = f["round_trips_per_call"] is not None and f["round_trips_per_call"] <= 1.0
        clean = not f["errors"] and not f["cancelled"] and not f["outcomes"].get("unenforced")
        all_ok = all_ok and rate_ok and window_ok and rt_ok and clean
        extra = f["call_commands"].get("EVALSHA", 0) - f["attempts"]
        why = ""
        if not rate_ok:
            if capacity is not None and capacity < n:
                why = f" - CPU-bound: unthrottled, the machine did {capacity:.0f}/s"
            elif extra > 0.01 * f["attempts"]:
                why = (
                    f" - the limiter: {extra} more slots reserved than calls made (calls that took a "
                    "second slot left the first one unused)"
                )
            elif (f["waited_share"] or 0) < 0.5:
                why = (
                    f" - CPU-bound at this concurrency: {pct(1 - (f['waited_share'] or 0))} of the calls "
                    "found their slot free (no wait)"
                )
            else:
                why = " - the limiter itself"
        lines.append(
            f"{n:>5}/s  rate {f['rate']:.1f}/s = {f['ratio']:.3f} x "
            f"({'PASS' if rate_ok else 'MISSED'}, target ±{RATE_TOLERANCE:.0%}){why}"
        )
        released = f.get("released") or {}
        lines.append(
            f"         worst one-second window {f['worst_1s']} at the partner "
            f"({'PASS' if window_ok else 'MISSED'}: {f['windows_over']} windows over {n}, "
            f"busiest aligned second {max(f['aligned_seconds'] or [0])}); "
            f"{released.get('worst_1s', '-')} as the limiter released them"
        )
        lines.append(
            f"         {f['round_trips_per_call']:.3f} Redis round trips per call "
            f"({'PASS' if rt_ok else 'MISSED'}: EVALSHA {f['evalsha_per_call']:.3f}/call; the rules loop's "
            f"{fmt(f['rules_commands_per_s'], '.1f')} commands/s per process are not per call)"
        )
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(f["outcomes"].items()))
        lines.append(f"         limiter outcomes: {outcomes or '-'}")
        if not clean:
            lines.append(
                f"         WARNING: errors {f['errors']}, cancelled {f['cancelled']}, "
                f"unenforced {f['outcomes'].get('unenforced', 0)}"
            )
        if f["throttled"]:
            lines.append(f"         {f['throttled']} calls answered 429 throttled (tried again at once)")
    return lines, all_ok


def code_fingerprint() -> dict[str, Any]:
    """Which limiter was measured: HEAD, whether app/throttling differs from it, limiter.py's hash."""
    limiter = ROOT / "app" / "throttling" / "limiter.py"
    return {
        "limiter_sha256": hashlib.sha256(limiter.read_bytes()).hexdigest()[:12] if limiter.exists() else None,
        **git_state("app/throttling", "app/upstream", "app/redis.py"),
    }


def cost_lines(phases: list[Phase], micro: dict[str, Any] | None) -> list[str]:
    lines = []
    by_name = {p.name: p for p in phases}
    for p in phases:
        if not p.limit or not p.figures:
            continue
        paced = by_name.get(f"paced {p.limit}")
        if paced is None or not paced.figures:
            continue
        a, b = p.figures["worker_cpu_us_per_call"], paced.figures["worker_cpu_us_per_call"]
        ra, rb = p.figures["redis_cpu_us_per_call"], paced.figures["redis_cpu_us_per_call"]
        if a is None or b is None:
            continue
        redis_part = ""
        if ra is not None and rb is not None:
            redis_part = f"; Redis server {ra:.0f} vs {rb:.0f} µs/call ({ra - rb:+.0f})"
        lines.append(
            f"{p.limit:>5}/s  load processes {a:.0f} µs CPU/call with the limiter, {b:.0f} paced at "
            f"{paced.figures['rate']:.0f}/s without config: {a - b:+.0f} µs/call{redis_part}"
        )
    if micro:
        w, wo, ping, conc = (
            micro["admit_with_rule"],
            micro["admit_without_rule"],
            micro["redis_ping"],
            micro["concurrent"],
        )
        lines.append(
            f"limiter alone (one process, unloaded, {micro['calls']} sequential calls): admit() with a rule "
            f"p50 {w['p50_us']:.0f} µs / p99 {w['p99_us']:.0f} µs wall, {w['cpu_us_per_call']:.0f} µs CPU; "
            f"without a rule {wo['p50_us']:.1f} µs; Redis PING p50 {ping['p50_us']:.0f} µs"
        )
        lines.append(
            f"         Redis commands per admit(): {sum(micro['commands_with_rule'].values()) / micro['calls']:.3f} "
            f"with a rule {micro['commands_with_rule']}, "
            f"{sum(micro['commands_without_rule'].values()) / micro['calls']:.3f} without"
        )
        lines.append(
            f"         {conc['tasks']} tasks calling admit() in one process: {conc['admits_per_s']:.0f} admits/s, "
            f"{conc['cpu_us_per_admit']:.0f} µs CPU each ({pct(conc['cpu_share'])} of a core)"
        )
    return lines


# ------------------------------------------------------------------------------ main


def parse_rates(text: str) -> list[int]:
    rates = [int(x) for x in text.replace("_", "").split(",") if x.strip()]
    if not rates:
        raise argparse.ArgumentTypeError("no rate given")
    return rates


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throttle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rates",
        type=parse_rates,
        default=parse_rates(DEFAULT_RATES),
        help="maxThroughput values (200-5000)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per throttled phase (default 10)"
    )
    parser.add_argument(
        "--paced-duration", type=float, default=5.0, help="seconds per unthrottled/paced phase (default 5)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=64, help="calling tasks per load process (default 64)"
    )
    parser.add_argument("--workers", type=int, default=2, help="load processes (default 2)")
    parser.add_argument(
        "--micro-calls", type=int, default=2000, help="sequential calls of the limiter-alone timing (0: skip)"
    )
    parser.add_argument(
        "--no-paced", action="store_true", help="skip the paced phases (no limiter cost figure)"
    )
    add_server_args(parser)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the scratch database")
    parser.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    args = parser.parse_args(argv)
    if args.duration <= 2 * TRIM or args.paced_duration <= 2 * TRIM:
        parser.error(f"durations must be over {2 * TRIM:g} s")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    line_buffered_stdout()
    run_id = secrets.token_hex(4)
    stamp = utc_stamp()
    db_name = f"sluice_bench_throttle_{run_id}"
    db_url = database_url(args.postgres_url, db_name)
    prefix = f"sluicebench-throttle-{run_id}:"
    log_dir = Path(tempfile.mkdtemp(prefix="bench-throttle-"))
    children = Children(log_dir)
    workers: list[Worker] = []
    phases: list[Phase] = []
    micro: dict[str, Any] | None = None
    failure: str | None = None
    interrupted = False
    created = False
    tokens = None
    loadavg = os.getloadavg()
    began = time.monotonic()
    code = code_fingerprint()
    print(
        f"code: HEAD {code.get('head')}, app/throttling/limiter.py sha256 {code['limiter_sha256']}"
        + (
            f"; changed since HEAD: {', '.join(code['changed_since_head'])}"
            if code.get("changed_since_head")
            else ""
        )
    )
    print(
        machine_line(loadavg)
        + f"; {args.workers} load processes x {args.concurrency} tasks; rates {', '.join(map(str, args.rates))}/s, "
        f"{args.duration:g} s each"
    )
    try:
        with sigterm_as_interrupt():
            asyncio.run(create_database(args.postgres_url, db_name))
            created = True
            env = dict(os.environ)
            env.update(
                DATABASE_URL=db_url,
                REDIS_URL=args.redis_url,
                REDIS_KEY_PREFIX=prefix,
                SANDBOX_ENABLED="false",
                LOG_LEVEL="WARNING",
                TRACING_ENABLED="false",
            )
            migrate(env, log_dir)
            upstream, upstream_url = start_fake_server(children, "upstream", "bench.throttle.upstream")
            env["PARTNER_BASE_URL"] = upstream_url
            settings = settings_for(db_url, args.redis_url, prefix, upstream_url)
            margin = float(settings.throttle_safety_margin)
            workers = [start_worker(children, i, env, args.concurrency) for i in range(args.workers)]
            for w in workers:
                w.receive(timeout=60)
            print(f"database {db_name}, Redis prefix {prefix}, partner {upstream_url}; load processes ready")
            if args.micro_calls > 0:
                micro = ask(workers[:1], [{"cmd": "micro", "calls": args.micro_calls}])[0]

            unthrottled = Phase("unthrottled", UNTHROTTLED_ORG, "closed", args.paced_duration)
            phases.append(unthrottled)
            run_phase(unthrottled, workers, upstream, upstream_url, args)
            print(progress(unthrottled))
            for rate in args.rates:
                org = f"bench-{rate}"
                limited = Phase(f"limit {rate}", org, "closed", args.duration, limit=rate)
                phases.append(limited)
                limited.deploy = asyncio.run(deploy(settings, org, rate, upstream_url))
                limited.propagation = ask(
                    workers,
                    [{"cmd": "await_version", "version": limited.deploy["version"], "timeout": 5.0}]
                    * len(workers),
                )
                run_phase(limited, workers, upstream, upstream_url, args)
                print(progress(limited))
                if not args.no_paced:
                    # The rate the limiter let through, without it: the same work minus the limiter.
                    paced_rate = min(limited.figures["rate"], rate * (1 - margin))
                    paced = Phase(
                        f"paced {rate}",
                        UNTHROTTLED_ORG,
                        "paced",
                        args.paced_duration,
                        limit=None,
                        rate=paced_rate,
                    )
                    phases.append(paced)
                    run_phase(paced, workers, upstream, upstream_url, args)
                    print(progress(paced))
            tokens = upstream_tokens(upstream_url)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping child processes ...", file=sys.stderr)
    except BenchError as exc:
        failure = str(exc)
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                w.send({"cmd": "quit"})
        for w in workers:
            with contextlib.suppress(Exception):
                w.child.proc.wait(timeout=5)
        children.close()
        if created and not args.keep_db:
            drop_databases(args.postgres_url, [db_name])
        clear_redis_prefix(args.redis_url, prefix)
    if interrupted:
        return 130

    unthrottled_phase = next((p for p in phases if p.name == "unthrottled"), None)
    print_table(phases)
    print(
        "  rate/s: arrivals at the partner per second over the steady part (first and last 0.5 s left out); "
        "worst 1s: most arrivals in any one-second window, sliding, whole phase; over: windows (one per "
        "arrival) holding more than the limit; .1s x10: busiest 100 ms x 10; rel 1s: worst one-second window "
        "of the moments the limiter let the calls go (admit() returned); waited: calls that slept for "
        "their slot (the rest found it free); cpu µs: load processes' CPU per call; RT/call: their Redis "
        "round trips per call (rules loop excluded); EVALSHA µs: the script's round trip as the caller saw it"
    )
    judged, all_ok = judge(phases, unthrottled_phase)
    if judged:
        print()
        print(
            f"targets (maxThroughput N): rate within ±{RATE_TOLERANCE:.0%} of N, no one-second window over N, "
            "at most one Redis round trip per call"
        )
        for line in judged:
            print(line)
    costs = cost_lines(phases, micro)
    if costs:
        print()
        print("limiter cost per call (against no config):")
        for line in costs:
            print(line)
    deployed = [p for p in phases if p.deploy]
    if deployed:
        print()
        print(
            "deploy -> every process enforcing it (pub/sub): "
            + ", ".join(
                f"{p.limit}/s "
                + "/".join(f"{x['after_s'] * 1000:.0f}" for x in p.propagation)
                + " ms"
                + (" (forced reload)" if any(x["forced_reload"] for x in p.propagation) else "")
                for p in deployed
            )
        )
    for p in phases:
        f = p.figures
        if (
            f
            and f.get("server_evalsha") is not None
            and f["server_evalsha"] != f["call_commands"].get("EVALSHA", 0)
        ):
            print(
                f"note: during {p.name} the Redis server ran {f['server_evalsha']} EVALSHA, the load processes "
                f"sent {f['call_commands'].get('EVALSHA', 0)}: another client used this Redis"
            )
    if tokens is not None:
        print(f"partner: {tokens} token requests (one per load process expected)")
    print(f"total time {time.monotonic() - began:.0f} s")

    report = {
        "benchmark": "throttle",
        "timestamp": stamp,
        "args": {k: v for k, v in vars(args).items() if k not in ("postgres_url", "redis_url")},
        "machine": machine_info(loadavg),
        "code": code,
        "micro": micro,
        "phases": [
            {
                "name": p.name,
                "org": p.org,
                "mode": p.mode,
                "duration": p.duration,
                "limit": p.limit,
                "rate": p.rate,
                "deploy": p.deploy,
                "propagation": p.propagation,
                "figures": p.figures,
            }
            for p in phases
        ],
        "targets_met": all_ok if judged else None,
        "failure": failure,
    }
    write_results("throttle", stamp, report)
    if failure:
        print(f"logs: {log_dir}")
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    if args.check and judged and not all_ok:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
