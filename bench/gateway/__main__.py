"""Sluice against a bare FastAPI passthrough, on the same fast upstream.

    python -m bench.gateway [--duration 15] [--connections 32] [--warmup 3] [--only baseline|sluice]
                            [--profiles full,trace-10pct,no-tracing] [--repeat 1]

Starts the fake partner (`upstream.py`), then the baseline and Sluice once per profile (each on its
own free loopback port, one uvicorn worker), `--repeat` rounds interleaved; loads each on
`GET /v1/products`, stops it, and prints req/s, p50, p99, the server's CPU time per request, errors
and the ratios against the baseline (medians over the rounds); the same figures go to
bench/results/gateway-<UTC>.json. Every child process is stopped on the way out (Ctrl-C and
failures included).

Profiles (environment overrides on top of the full Sluice environment):
  full                  every feature on: tracing sampled at 1.0, the communication log (judged)
  trace-10pct           TRACE_SAMPLE_RATIO=0.1
  no-tracing            TRACING_ENABLED=false
  otel-instrumentation  TRACING_SERVER_SPANS=otel (opentelemetry-instrumentation-fastapi)
  no-commlog            COMMLOG_ENABLED=false
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common.database import (
    DEFAULT_REDIS_URL,
    asyncpg_dsn,
    database_url,
    delete_redis_keys,
    quoted,
    run_to_end,
)
from bench.common.processes import (
    BenchError,
    Child,
    Children,
    check_sluice_present,
    free_port,
    http_get,
    server_pid,
    sigterm_as_interrupt,
    sluice_env,
    start_fake_server,
    uvicorn_cmd,
    wait_ready,
)
from bench.common.results import line_buffered_stdout, machine_info, machine_line, utc_stamp, write_results
from bench.gateway.load import LoadError, LoadResult, run_load, try_install_wrk, wrk_version

TARGET_THROUGHPUT_RATIO = 0.60  # Sluice req/s >= 0.6 x baseline
TARGET_P99_RATIO = 2.00  # Sluice p99 <= 2 x baseline

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/sluice_bench"
REDIS_KEY_PREFIX = "sluicebench:"

# Sluice profiles: environment overrides on top of `sluice_env()` (which is `full` already).
PROFILES: dict[str, dict[str, str]] = {
    "full": {"TRACING_ENABLED": "true", "TRACE_SAMPLE_RATIO": "1.0", "COMMLOG_ENABLED": "true"},
    "trace-10pct": {"TRACE_SAMPLE_RATIO": "0.1"},
    "no-tracing": {"TRACING_ENABLED": "false"},
    "otel-instrumentation": {"TRACING_SERVER_SPANS": "otel"},
    "no-commlog": {"COMMLOG_ENABLED": "false"},
}
DEFAULT_PROFILES = "full,trace-10pct,no-tracing"
JUDGED_PROFILE = "full"  # the row the targets are judged on


# --------------------------------------------------------------------------------- targets


def upstream_stats(upstream_url: str) -> dict[str, int]:
    status, body = http_get(f"{upstream_url}/_bench/stats")
    if status != 200:
        raise BenchError(f"upstream stats answered HTTP {status}")
    return dict(json.loads(body))


def start_baseline(
    children: Children, upstream_url: str, path: str, headers: dict[str, str]
) -> tuple[Child, str]:
    port = free_port()
    env = {**os.environ, "BENCH_UPSTREAM_URL": upstream_url}
    child = children.start("baseline", uvicorn_cmd("bench.gateway.baseline:app", port), env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(child, base + path, headers)
    return child, base


async def _ensure_database(url: str, reset: bool) -> None:
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    if not name:
        raise BenchError(f"no database name in {url}")
    conn = await asyncpg.connect(asyncpg_dsn(database_url(url, "postgres")), timeout=10)
    try:
        if reset:
            await conn.execute(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {quoted(name)}")
            print(f"created database {name}")
    finally:
        await conn.close()


def ensure_database(database_url: str, reset: bool) -> None:
    try:
        asyncio.run(_ensure_database(database_url, reset))
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"could not prepare the Postgres database ({database_url}): {exc!r}") from exc


def clear_redis(redis_url: str) -> int:
    """Drop the benchmark's keys (a token cached by an earlier run would hide the token count)."""
    try:
        import redis
    except ImportError as exc:
        raise BenchError("the `redis` package is needed to clear the benchmark's Redis keys") from exc
    try:
        return delete_redis_keys(redis_url, REDIS_KEY_PREFIX)
    except redis.RedisError as exc:
        raise BenchError(f"could not reach Redis at {redis_url}: {exc}") from exc


def run_migrations(env: dict[str, str], log_dir: Path) -> None:
    run_to_end(["-m", "alembic", "upgrade", "head"], "alembic upgrade head", env, log_dir / "alembic.log")


def start_sluice(
    children: Children, env: dict[str, str], path: str, headers: dict[str, str], name: str = "sluice"
) -> tuple[Child, str]:
    port = free_port()
    child = children.start(name, uvicorn_cmd("app.main:create_app", port, factory=True), env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(child, f"{base}/health/live")
    # Live is not enough: the measured route itself must answer 200 with our headers.
    status, body = http_get(base + path, headers, timeout=10.0)
    if status != 200:
        raise BenchError(
            f"Sluice is up but GET {path} answered HTTP {status}: {body[:500]!r}\n{child.last_output()}"
        )
    return child, base


# ------------------------------------------------------------------------------------ runs


@dataclass
class Run:
    """One start of one target in one round."""

    round: int
    target: str  # "baseline" or a Sluice profile
    result: LoadResult | None = None
    upstream: dict[str, int] | None = None  # what the upstream saw from this start
    failure: str | None = None
    vs_baseline: dict[str, Any] | None = None  # ratios against the same round's baseline

    @property
    def label(self) -> str:
        return label_of(self.target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "target": self.target,
            "label": self.label,
            "result": self.result.as_dict() if self.result else None,
            "upstream": self.upstream,
            "failure": self.failure,
            "vs_baseline": self.vs_baseline,
        }


def label_of(target: str) -> str:
    return target if target == "baseline" else f"sluice {target}"


def summarize(results: list[LoadResult]) -> dict[str, Any]:
    """Median of each figure over the runs; errors are summed (one bad run must show)."""
    cpus = [r.cpu_us_per_req for r in results if r.cpu_us_per_req is not None]
    return {
        "runs": len(results),
        "rps": statistics.median(r.rps for r in results),
        "p50_ms": statistics.median(r.p50_ms for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
        "cpu_us_per_req": statistics.median(cpus) if cpus else None,
        "errors": sum(r.errors for r in results),
        "requests": sum(r.requests for r in results),
    }


def ratios(base: dict[str, Any], sluice: dict[str, Any]) -> dict[str, Any]:
    """Sluice against the baseline: throughput and p99 as Sluice/baseline, cpu as baseline/Sluice."""
    out: dict[str, Any] = {}
    if base["rps"] and base["p99_ms"]:
        out["throughput"] = sluice["rps"] / base["rps"]
        out["p99"] = sluice["p99_ms"] / base["p99_ms"]
        out["throughput_ok"] = out["throughput"] >= TARGET_THROUGHPUT_RATIO
        out["p99_ok"] = out["p99"] <= TARGET_P99_RATIO
    if base["cpu_us_per_req"] and sluice["cpu_us_per_req"]:
        out["cpu"] = base["cpu_us_per_req"] / sluice["cpu_us_per_req"]
    return out


def figures_of(r: LoadResult) -> dict[str, Any]:
    return {"rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "cpu_us_per_req": r.cpu_us_per_req}


# ---------------------------------------------------------------------------------- output


def table_header(width: int, extra: str = "") -> str:
    head = f"{'target':<{width}} {'req/s':>5} {'p50 ms':>8} {'p99 ms':>8} {'cpu µs/req':>11} {'errors':>7}"
    return head + extra


def table_row(name: str, width: int, fig: dict[str, Any] | None, note: str = "") -> str:
    if fig is None:
        return f"{name:<{width}} {'-':>5} {'-':>8} {'-':>8} {'-':>11} {'-':>7}  {note}".rstrip()
    cpu = f"{fig['cpu_us_per_req']:>11.0f}" if fig.get("cpu_us_per_req") is not None else f"{'-':>11}"
    errors = fig.get("errors", 0)
    row = f"{name:<{width}} {fig['rps']:>5.0f} {fig['p50_ms']:>8.1f} {fig['p99_ms']:>8.1f} {cpu} {errors:>7}"
    return f"{row}  {note}".rstrip() if note or not errors else f"{row}  <-- ERRORS"


def ratio_line(profile: str, ratio: dict[str, Any]) -> str:
    judged = profile == JUDGED_PROFILE
    parts = []
    if "throughput" in ratio:
        tput = f"throughput {ratio['throughput']:.2f}x"
        p99 = f"p99 {ratio['p99']:.2f}x"
        if judged:
            tput += (
                f" (target >= {TARGET_THROUGHPUT_RATIO:.2f}) {'ok' if ratio['throughput_ok'] else 'MISSED'}"
            )
            p99 += f" (target <= {TARGET_P99_RATIO:.2f}) {'ok' if ratio['p99_ok'] else 'MISSED'}"
        parts += [tput, p99]
    parts.append(f"cpu {ratio['cpu']:.2f}x" if "cpu" in ratio else "cpu -")
    return f"{profile} vs baseline: " + ", ".join(parts)


def describe_errors(name: str, r: LoadResult) -> str:
    parts = []
    if r.non_200:
        parts.append("non-200 answers " + ", ".join(f"HTTP {k}: {v}" for k, v in sorted(r.non_200.items())))
    if r.socket_errors:
        parts.append("socket errors " + ", ".join(f"{k}: {v}" for k, v in sorted(r.socket_errors.items())))
    return f"WARNING: {name} run had {r.errors} errors ({'; '.join(parts)}); its figures are suspect"


def progress(run: Run) -> str:
    r = run.result
    assert r is not None
    cpu = f"{r.cpu_us_per_req:.0f} µs/req (pid {r.server_pid})" if r.cpu_us_per_req is not None else "-"
    line = f"{r.rps:.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, cpu {cpu}, {r.errors} errors"
    if run.upstream is not None and run.target != "baseline":
        line += f", {run.upstream.get('tokens', 0)} token requests"
    return line


def parse_profiles(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROFILES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown profile(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PROFILES)}"
        )
    return list(dict.fromkeys(names))  # keep the order, drop repeats


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run (default 15)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (32)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="unmeasured seconds before each run (default 3)"
    )
    parser.add_argument(
        "--only", choices=("baseline", "sluice"), help="run the baseline only, or the Sluice profiles only"
    )
    parser.add_argument(
        "--profiles",
        type=parse_profiles,
        default=parse_profiles(DEFAULT_PROFILES),
        help=f"comma-separated Sluice profiles, in run order (default {DEFAULT_PROFILES}; "
        f"all: {','.join(PROFILES)})",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of baseline + every profile, interleaved; medians are reported (default 1)",
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument("--path", default="/v1/products", help="the route loaded on every target")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="Sluice's Postgres (env BENCH_DATABASE_URL); the database is created if missing",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="env BENCH_REDIS_URL",
    )
    parser.add_argument("--reset-db", action="store_true", help="drop and recreate Sluice's database first")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 2 when the full profile misses a target or a run had errors",
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1 or not 1 <= args.repeat <= 20:
        parser.error("--duration >= 1, --warmup >= 0, --connections >= 1 and 1 <= --repeat <= 20")
    return args


# ------------------------------------------------------------------------------------ main


class SluicePrep:
    """Database and migrations, once per benchmark; a failure skips every later Sluice start."""

    def __init__(self, args: argparse.Namespace, log_dir: Path) -> None:
        self.args, self.log_dir = args, log_dir
        self.done = False
        self.error: str | None = None

    def ensure(self, env: dict[str, str]) -> None:
        if self.error is not None:
            raise BenchError(f"not started: {self.error.splitlines()[0]}")
        if self.done:
            return
        try:
            check_sluice_present()
            ensure_database(self.args.database_url, self.args.reset_db)
            run_migrations(env, self.log_dir)
        except BenchError as exc:
            self.error = str(exc)
            raise
        self.done = True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    line_buffered_stdout()
    profiles: list[str] = [] if args.only == "baseline" else args.profiles
    order = ([] if args.only == "sluice" else ["baseline"]) + profiles

    generator = args.generator
    if generator in ("auto", "wrk") and not try_install_wrk():
        if generator == "wrk":
            print("wrk is not installed and could not be installed", file=sys.stderr)
            return 1
        print("wrk is not available: falling back to the Python aiohttp load generator (no CPU figure)")
        generator = "python"
    elif generator == "auto":
        generator = "wrk"
    gen_label = (
        f"{wrk_version() or 'wrk'}, 1 thread" if generator == "wrk" else "python-aiohttp (separate process)"
    )

    admin_key = "bench-" + secrets.token_urlsafe(24)
    headers = {"X-API-Key": admin_key, "X-Client-ID": "bench", "X-Language-ID": "en"}
    stamp = utc_stamp()
    loadavg_start = os.getloadavg()
    runs: list[Run] = []
    setup_failure: str | None = None

    print(
        f"generator: {gen_label}, {args.connections} connections, {args.duration} s "
        f"(+{args.warmup} s warm-up) on GET {args.path}"
    )
    print(machine_line(loadavg_start))
    print(
        f"order: {', '.join(label_of(t) for t in order)}"
        + (f"; {args.repeat} rounds, interleaved" if args.repeat > 1 else "")
    )

    log_dir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    children = Children(log_dir)
    prep = SluicePrep(args, log_dir)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            _, upstream_url = start_fake_server(children, "upstream", "bench.gateway.upstream")
            for rnd in range(1, args.repeat + 1):
                for target in order:
                    run = Run(rnd, target)
                    runs.append(run)
                    tag = f"[{run.label}" + (f" #{rnd}]" if args.repeat > 1 else "]")
                    child: Child | None = None
                    try:
                        print(f"{tag} starting ...", flush=True)
                        if target == "baseline":
                            before = upstream_stats(upstream_url)
                            child, base = start_baseline(children, upstream_url, args.path, headers)
                        else:
                            env = sluice_env(
                                upstream_url,
                                admin_key,
                                args.database_url,
                                args.redis_url,
                                REDIS_KEY_PREFIX,
                                PROFILES[target],
                            )
                            prep.ensure(env)
                            # Every start fetches exactly one token: none may be cached from before.
                            dropped = clear_redis(args.redis_url)
                            if dropped:
                                print(f"{tag} cleared {dropped} Redis keys under {REDIS_KEY_PREFIX}")
                            # Before the start: the token fetched for the first request counts too.
                            before = upstream_stats(upstream_url)
                            name = "sluice-" + target
                            child, base = start_sluice(children, env, args.path, headers, name)
                        pid = server_pid(child)
                        run.result = run_load(
                            base + args.path,
                            headers,
                            connections=args.connections,
                            duration=args.duration,
                            warmup=args.warmup,
                            generator=generator,
                            server_pid=pid,
                        )
                        after = upstream_stats(upstream_url)
                        run.upstream = {k: after[k] - before.get(k, 0) for k in after}
                        if not child.alive():
                            raise BenchError(
                                f"{target} died during the run (exit {child.proc.returncode}).\n{child.tail()}"
                            )
                        print(f"{tag} {progress(run)}", flush=True)
                    except (BenchError, LoadError) as exc:
                        run.result = None
                        run.failure = str(exc)
                        print(f"{tag} FAILED: {exc}", file=sys.stderr, flush=True)
                    finally:
                        if child is not None:
                            child.stop()
                            time.sleep(1.0)  # let the machine settle before the next target
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping child processes ...", file=sys.stderr)
    except BenchError as exc:
        setup_failure = str(exc)
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        children.close()

    if interrupted:
        return 130

    # ---- figures: medians per target, ratios from the medians and per round
    done = {t: [r.result for r in runs if r.target == t and r.result] for t in order}
    summary = {t: summarize(rs) for t, rs in done.items() if rs}
    ratio_by_profile: dict[str, dict[str, Any]] = {}
    if "baseline" in summary:
        for p in profiles:
            if p in summary:
                ratio_by_profile[p] = ratios(summary["baseline"], summary[p])
    base_by_round = {r.round: r.result for r in runs if r.target == "baseline"}
    for r in runs:
        b = base_by_round.get(r.round)
        if r.target != "baseline" and b and r.result:
            r.vs_baseline = ratios(figures_of(b), figures_of(r.result))
    per_round = {p: [r.vs_baseline for r in runs if r.target == p] for p in profiles}
    tokens = {
        p: [r.upstream.get("tokens", 0) if r.upstream else None for r in runs if r.target == p]
        for p in profiles
    }
    failures = [r for r in runs if r.failure]

    # ---- print
    width = max([18, *(len(label_of(t)) for t in order)])
    print()
    print(f"generator: {gen_label}, {args.connections} connections, {args.duration} s per run")
    if args.repeat > 1:
        print("per run (x: against the same round's baseline; cpu x = baseline cpu / Sluice cpu):")
        print(table_header(width + 3, f"  {'tput x':>6} {'p99 x':>6} {'cpu x':>6}"))
        for r in runs:
            name = f"{r.round:<2} {r.label}"
            if r.result is None:
                print(table_row(name, width + 3, None, "FAILED"))
                continue
            fig = {**figures_of(r.result), "errors": r.result.errors}
            note = ""
            if r.target != "baseline":
                vs = r.vs_baseline or {}
                note = " ".join(
                    f"{vs[k]:>5.2f}x" if k in vs else f"{'-':>6}" for k in ("throughput", "p99", "cpu")
                )
            print(table_row(name, width + 3, fig, note))
        print()
        print(f"median of {args.repeat} rounds (errors: sum):")
    print(table_header(width))
    for t in order:
        fig = summary.get(t)
        note = "FAILED" if fig is None else ""
        if fig is not None and fig["runs"] < args.repeat:
            note = f"({fig['runs']} of {args.repeat} runs)"
        print(table_row(label_of(t), width, fig, note))
    for p in profiles:
        if p in ratio_by_profile:
            print(ratio_line(p, ratio_by_profile[p]))
    if profiles:
        per_start = ", ".join(
            f"{p} {'/'.join('-' if n is None else str(n) for n in tokens[p])}" for p in profiles
        )
        odd = any(n not in (None, 1) for ns in tokens.values() for n in ns)
        print(
            f"token requests per Sluice start (expected 1 each): {per_start}"
            + ("  <-- UNEXPECTED" if odd else "")
        )
    for r in runs:
        if r.upstream and r.target != "baseline" and r.upstream.get("unauthenticated"):
            print(
                f"WARNING: {r.label} (round {r.round}) sent {r.upstream['unauthenticated']} product-list "
                "requests WITHOUT a valid bearer token"
            )
        if r.result and r.result.errors:
            print(describe_errors(f"{r.label} (round {r.round})", r.result))
    for r in failures:
        print(f"{r.label} (round {r.round}): FAILED - {(r.failure or '').splitlines()[0]}")
    if setup_failure:
        print(f"upstream: FAILED - {setup_failure.splitlines()[0]}")

    flagged = any(r.result and r.result.errors for r in runs)
    judged = ratio_by_profile.get(JUDGED_PROFILE, {})
    report = {
        "benchmark": "gateway",
        "timestamp": stamp,
        "generator": gen_label,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "path": args.path,
        "repeat": args.repeat,
        "order": order,
        "profiles": {p: PROFILES[p] for p in profiles},
        "machine": machine_info(loadavg_start, clk_tck=os.sysconf("SC_CLK_TCK")),
        # Medians over the rounds (errors and requests summed), keyed "baseline" or the profile.
        "summary": summary,
        # Against the baseline, from the medians: throughput and p99 Sluice/baseline, cpu baseline/Sluice.
        "ratios": ratio_by_profile,
        "ratios_per_round": per_round,
        "ratio": judged,  # the judged row (profile "full")
        "targets": {
            "profile": JUDGED_PROFILE,
            "throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
            "p99_ratio_max": TARGET_P99_RATIO,
        },
        "tokens": tokens,
        "runs": [r.as_dict() for r in runs],
        "failures": {f"{r.label} #{r.round}": r.failure for r in failures}
        | ({"upstream": setup_failure} if setup_failure else {}),
        "flagged": flagged,
    }
    write_results("gateway", stamp, report)
    any_failure = bool(failures or setup_failure)
    if any_failure:
        print(f"logs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)

    if any_failure:
        return 1
    if args.check and (flagged or (judged and not (judged.get("throughput_ok") and judged.get("p99_ok")))):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
