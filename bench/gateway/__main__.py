"""Sluice against a bare FastAPI passthrough, on the same fast upstream.

    python -m bench.gateway [--duration 15] [--connections 32] [--warmup 3] [--only baseline|sluice]

Starts the fake partner (`upstream.py`), then each target in turn on its own free loopback port
(one uvicorn worker each), loads it on `GET /v1/products`, stops it, and prints req/s, p50, p99,
errors and the Sluice/baseline ratios; the same figures go to bench/results/gateway-<UTC>.json.
Every child process is stopped on the way out (Ctrl-C and failures included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.gateway.load import LoadError, LoadResult, die_with_parent, run_load, try_install_wrk, wrk_version

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench" / "results"

TARGET_THROUGHPUT_RATIO = 0.60  # Sluice req/s >= 0.6 x baseline
TARGET_P99_RATIO = 2.00  # Sluice p99 <= 2 x baseline
READY_TIMEOUT = 30.0

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/sluice_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_KEY_PREFIX = "sluicebench:"


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------------- processes


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(no output)"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to its process group, then SIGKILL after `grace` seconds."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


class Children:
    """Every process the benchmark starts; `close()` stops them all, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: Ctrl-C reaches us, and we stop it in order
                preexec_fn=die_with_parent,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:
                print(f"could not stop {child.name} (pid {child.proc.pid}): {exc}", file=sys.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(child: Child, url: str, headers: dict[str, str] | None = None) -> None:
    """Poll `url` until it answers 200; fail early if the process exits, or after 30 s."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(
                f"{child.name} exited with code {child.proc.returncode} before it was ready.\n"
                f"--- last lines of its output ({child.log}) ---\n{child.tail()}"
            )
        try:
            status, body = http_get(url, headers, timeout=2.0)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last = f"HTTP {status}: {body[:300]!r}"
        time.sleep(0.2)
    raise BenchError(
        f"{child.name} was not ready within {READY_TIMEOUT:.0f}s ({url}: {last}).\n"
        f"--- last lines of its output ({child.log}) ---\n{child.tail()}"
    )


def uvicorn_cmd(app: str, port: int, *, factory: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", app]
    if factory:
        cmd.append("--factory")
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return [*cmd, "--no-access-log", "--log-level", "warning"]


# --------------------------------------------------------------------------------- targets


def start_upstream(children: Children) -> tuple[Child, str]:
    port = free_port()
    child = children.start("upstream", [sys.executable, "-m", "bench.gateway.upstream", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    wait_ready(child, f"{base}/_bench/health")
    return child, base


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


def sluice_env(upstream_url: str, admin_key: str, database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=REDIS_KEY_PREFIX,
        PARTNER_BASE_URL=upstream_url,
        BOOTSTRAP_ADMIN_KEY=admin_key,
        SANDBOX_ENABLED="false",
        LOG_LEVEL="WARNING",
        TRACING_ENABLED="true",
        TRACE_SAMPLE_RATIO="1.0",
        COMMLOG_ENABLED="true",
    )
    env.setdefault("OTEL_TRACES_EXPORTER", "none")
    return env


def check_sluice_present() -> None:
    main = ROOT / "app" / "main.py"
    if not main.is_file() or "def create_app" not in main.read_text(errors="replace"):
        raise BenchError(
            f"Sluice cannot start: {main.relative_to(ROOT)} with create_app() does not exist yet. "
            "Run `python -m bench.gateway --only baseline` until it does."
        )


async def _ensure_database(database_url: str, reset: bool) -> None:
    import asyncpg

    parts = urllib.parse.urlsplit(database_url.replace("+asyncpg", "", 1))
    name = parts.path.lstrip("/")
    if not name:
        raise BenchError(f"no database name in {database_url}")
    admin_dsn = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        if reset:
            await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {quoted}")
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
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=REDIS_KEY_PREFIX + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i : i + 500])
            return len(keys)
        finally:
            client.close()
    except redis.RedisError as exc:
        raise BenchError(f"could not reach Redis at {redis_url}: {exc}") from exc


def run_migrations(env: dict[str, str], log_dir: Path) -> None:
    log = log_dir / "alembic.log"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=180,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError("`alembic upgrade head` did not finish within 180s") from exc
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).rstrip().splitlines()[-30:])
        raise BenchError(f"`alembic upgrade head` failed (exit {proc.returncode}):\n{tail}")


def start_sluice(
    children: Children, env: dict[str, str], path: str, headers: dict[str, str]
) -> tuple[Child, str]:
    port = free_port()
    child = children.start("sluice", uvicorn_cmd("app.main:create_app", port, factory=True), env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(child, f"{base}/health/live")
    # Live is not enough: the measured route itself must answer 200 with our headers.
    status, body = http_get(base + path, headers, timeout=10.0)
    if status != 200:
        raise BenchError(
            f"Sluice is up but GET {path} answered HTTP {status}: {body[:500]!r}\n"
            f"--- last lines of its output ({child.log}) ---\n{child.tail()}"
        )
    return child, base


# ---------------------------------------------------------------------------------- output


def fmt_row(name: str, r: LoadResult | None, note: str = "") -> str:
    if r is None:
        return f"{name:<10} {'-':>8} {'-':>9} {'-':>9} {'-':>11} {'-':>7}  {note}".rstrip()
    flag = "  <-- ERRORS" if r.errors else ""
    cpu = f"{r.cpu_us_per_req:>11.0f}" if r.cpu_us_per_req is not None else f"{'-':>11}"
    return f"{name:<10} {r.rps:>8.0f} {r.p50_ms:>9.1f} {r.p99_ms:>9.1f} {cpu} {r.errors:>7}{flag}"


def describe_errors(name: str, r: LoadResult) -> str:
    parts = []
    if r.non_200:
        parts.append("non-200 answers " + ", ".join(f"HTTP {k}: {v}" for k, v in sorted(r.non_200.items())))
    if r.socket_errors:
        parts.append("socket errors " + ", ".join(f"{k}: {v}" for k, v in sorted(r.socket_errors.items())))
    return f"WARNING: {name} run had {r.errors} errors ({'; '.join(parts)}); its figures are suspect"


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per target (default 15)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (32)")
    parser.add_argument(
        "--warmup", type=int, default=3, help="unmeasured seconds before each run (default 3)"
    )
    parser.add_argument("--only", choices=("baseline", "sluice"), help="run one target only")
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator (auto: wrk if installed)",
    )
    parser.add_argument("--path", default="/v1/products", help="the route loaded on both targets")
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
        "--check", action="store_true", help="exit 2 when a target is missed or a run had errors"
    )
    args = parser.parse_args(argv)
    if args.duration < 1 or args.warmup < 0 or args.connections < 1:
        parser.error("--duration >= 1, --warmup >= 0 and --connections >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    targets = [args.only] if args.only else ["baseline", "sluice"]

    generator = args.generator
    if generator in ("auto", "wrk") and not try_install_wrk():
        if generator == "wrk":
            print("wrk is not installed and could not be installed", file=sys.stderr)
            return 1
        print("wrk is not available: falling back to the Python aiohttp load generator")
        generator = "python"
    elif generator == "auto":
        generator = "wrk"
    gen_label = (
        f"{wrk_version() or 'wrk'}, 1 thread" if generator == "wrk" else "python-aiohttp (separate process)"
    )

    admin_key = "bench-" + secrets.token_urlsafe(24)
    headers = {"X-API-Key": admin_key, "X-Client-ID": "bench", "X-Language-ID": "en"}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, LoadResult] = {}
    failures: dict[str, str] = {}
    upstream_counts: dict[str, dict[str, int]] = {}

    print(
        f"generator: {gen_label}, {args.connections} connections, {args.duration} s "
        f"(+{args.warmup} s warm-up) on GET {args.path}"
    )
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    log_dir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    children = Children(log_dir)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            _, upstream_url = start_upstream(children)
            for target in targets:
                child: Child | None = None
                try:
                    print(f"[{target}] starting ...", flush=True)
                    if target == "baseline":
                        before = upstream_stats(upstream_url)
                        child, base = start_baseline(children, upstream_url, args.path, headers)
                    else:
                        check_sluice_present()
                        ensure_database(args.database_url, args.reset_db)
                        dropped = clear_redis(args.redis_url)
                        if dropped:
                            print(f"[sluice] cleared {dropped} stale Redis keys under {REDIS_KEY_PREFIX}")
                        env = sluice_env(upstream_url, admin_key, args.database_url, args.redis_url)
                        run_migrations(env, log_dir)
                        # Before the start: the token fetched for the first request counts too.
                        before = upstream_stats(upstream_url)
                        child, base = start_sluice(children, env, args.path, headers)
                    print(f"[{target}] loading {base}{args.path} ...", flush=True)
                    results[target] = run_load(
                        base + args.path,
                        headers,
                        connections=args.connections,
                        duration=args.duration,
                        warmup=args.warmup,
                        generator=generator,
                        server_pid=child.proc.pid,
                    )
                    after = upstream_stats(upstream_url)
                    upstream_counts[target] = {k: after[k] - before.get(k, 0) for k in after}
                    if not child.alive():
                        raise BenchError(
                            f"{target} died during the run (exit {child.proc.returncode}).\n{child.tail()}"
                        )
                except (BenchError, LoadError) as exc:
                    failures[target] = str(exc)
                    print(f"[{target}] FAILED: {exc}", file=sys.stderr, flush=True)
                finally:
                    if child is not None:
                        child.stop()
                        time.sleep(1.0)  # let the machine settle before the next target
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping child processes ...", file=sys.stderr)
    except BenchError as exc:
        failures["upstream"] = str(exc)
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        children.close()

    if interrupted:
        return 130

    base_r, sluice_r = results.get("baseline"), results.get("sluice")
    print()
    print(f"generator: {gen_label}, {args.connections} connections, {args.duration} s")
    print(f"{'target':<10} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'cpu us/req':>11} {'errors':>7}")
    for target in targets:
        print(fmt_row(target, results.get(target), "FAILED" if target in failures else ""))

    ratio: dict[str, Any] = {}
    if base_r and sluice_r and base_r.rps and base_r.p99_ms:
        tput = sluice_r.rps / base_r.rps
        p99 = sluice_r.p99_ms / base_r.p99_ms
        ok_t, ok_p = tput >= TARGET_THROUGHPUT_RATIO, p99 <= TARGET_P99_RATIO
        ratio = {"throughput": tput, "p99": p99, "throughput_ok": ok_t, "p99_ok": ok_p}
        print(
            f"{'ratio':<10} {tput:.2f}x throughput (target >= {TARGET_THROUGHPUT_RATIO:.2f}) "
            f"{'ok' if ok_t else 'MISSED'}   p99 {p99:.2f}x (target <= {TARGET_P99_RATIO:.2f}) "
            f"{'ok' if ok_p else 'MISSED'}"
        )
        if base_r.cpu_us_per_req and sluice_r.cpu_us_per_req:
            ratio["cpu"] = base_r.cpu_us_per_req / sluice_r.cpu_us_per_req
            print(
                f"{'cpu':<10} {ratio['cpu']:.2f}x (baseline CPU per request / Sluice's: the throughput ratio "
                "if both were CPU-bound on one core; steadier than req/s on a shared machine)"
            )
    for target, r in results.items():
        if r.errors:
            print(describe_errors(target, r))
    for target, counts in upstream_counts.items():
        line = (
            f"upstream saw for {target}: {counts.get('product_requests', 0)} product-list requests, "
            f"{counts.get('tokens', 0)} token requests"
        )
        if target == "sluice":
            line += " (expected 1)"
            if counts.get("unauthenticated"):
                line += f", {counts['unauthenticated']} WITHOUT a valid bearer token"
        print(line)
    for target, message in failures.items():
        print(f"{target}: FAILED - {message.splitlines()[0]}")

    report = {
        "benchmark": "gateway",
        "timestamp": stamp,
        "generator": gen_label,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "path": args.path,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "results": {name: r.as_dict() for name, r in results.items()},
        "ratio": ratio,
        "targets": {"throughput_ratio_min": TARGET_THROUGHPUT_RATIO, "p99_ratio_max": TARGET_P99_RATIO},
        "upstream": upstream_counts,
        "failures": failures,
        "flagged": any(r.errors for r in results.values()),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"gateway-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out.relative_to(ROOT)}")
    if failures:
        print(f"logs: {log_dir}")
    else:
        for f in log_dir.iterdir():
            f.unlink()
        log_dir.rmdir()

    if failures:
        return 1
    if args.check and (report["flagged"] or (ratio and not (ratio["throughput_ok"] and ratio["p99_ok"]))):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
