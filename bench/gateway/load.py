"""Load generators: wrk (preferred) or a Python aiohttp client in its own process.

Both hold N keep-alive connections busy for a warm-up (not measured), then for the measured
duration, and report a `LoadResult`: requests, req/s, p50/p99 latency, non-200 answers and
socket errors. Both stop by themselves: wrk after `-d`, the Python client at its deadline or after
`MAX_REQUESTS`, whichever comes first.

The Python client alone (prints one JSON line):

    python -m bench.gateway.load --url http://127.0.0.1:9002/v1/products -c 32 -d 10 -w 2 \
        -H 'X-API-Key: ...'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common.cpu import cpu_of
from bench.common.processes import die_with_parent

# A hard cap on the requests of one Python-client run, on top of its deadline.
MAX_REQUESTS = 2_000_000
REQUEST_TIMEOUT = 10.0


@dataclass
class LoadResult:
    generator: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    # HTTP status -> count, for every answer that was not a 200.
    non_200: dict[str, int] = field(default_factory=dict)
    # Socket-level failures (connect, read, write, timeout, or exception names).
    socket_errors: dict[str, int] = field(default_factory=dict)
    # CPU time (utime + stime) the server process spent during the measured run, and per answered
    # request (wrk only). Far steadier than req/s on a shared machine: other load barely changes it.
    server_pid: int | None = None
    server_cpu_s: float | None = None
    cpu_us_per_req: float | None = None

    @property
    def errors(self) -> int:
        return sum(self.non_200.values()) + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "errors": self.errors}


class LoadError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------- wrk

WRK_SCRIPT = r"""
-- Written by bench/gateway/load.py: counts status codes and prints the figures as JSON.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local agg = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for code, n in pairs(s) do agg[code] = (agg[code] or 0) + n end
    end
  end
  local parts = {}
  for code, n in pairs(agg) do
    table.insert(parts, string.format('"%d":%d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.timeout, e.status, table.concat(parts, ",")))
end
"""


def wrk_version() -> str | None:
    """`wrk 4.1.0` or None when wrk is not installed (or does not run)."""
    exe = shutil.which("wrk")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"wrk\s+(?:\S+/)?(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def try_install_wrk() -> bool:
    """Install Debian's wrk when running as root with apt-get; True if wrk is there afterwards."""
    if shutil.which("wrk"):
        return True
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print("wrk not found: trying `apt-get install -y wrk` ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    # Without package lists the first install fails: update once and retry.
    for cmd in (install, ["apt-get", "update", "-qq"], install):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if shutil.which("wrk"):
            return True
    return False


def _run_wrk(
    url: str, headers: dict[str, str], connections: int, seconds: int, script: Path, label: str
) -> LoadResult:
    cmd = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        f"{int(REQUEST_TIMEOUT)}s",
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += ["-s", str(script), url]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, preexec_fn=die_with_parent
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"wrk did not finish within {seconds + 60}s") from exc
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise LoadError(f"wrk failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}".rstrip())
    data = json.loads(line.removeprefix("BENCH_JSON "))
    duration = data["duration_us"] / 1e6
    requests = data["requests"]
    statuses = {str(k): v for k, v in data["statuses"].items()}
    non_200 = {k: v for k, v in statuses.items() if k != "200"}
    socket_errors = {k: v for k, v in data["errors"].items() if k != "status" and v}
    return LoadResult(
        generator=label,
        connections=connections,
        duration_s=round(duration, 3),
        requests=requests,
        rps=requests / duration if duration else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        non_200=non_200,
        socket_errors=socket_errors,
    )


def run_wrk(
    url: str,
    headers: dict[str, str],
    connections: int,
    duration: int,
    warmup: int,
    server_pid: int | None = None,
) -> LoadResult:
    """One wrk thread (the 2-core machine keeps the other core for the server under test)."""
    label = wrk_version() or "wrk"
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "report.lua"
        script.write_text(WRK_SCRIPT)
        if warmup > 0:
            _run_wrk(url, headers, connections, warmup, script, label)
        # Read just before and just after the measured run (the warm-up is not counted).
        cpu_before = cpu_of(server_pid)
        result = _run_wrk(url, headers, connections, duration, script, label)
        cpu_after = cpu_of(server_pid)
        if cpu_before is not None and cpu_after is not None:
            result.server_pid = server_pid
            result.server_cpu_s = round(cpu_after - cpu_before, 3)
            if result.requests:
                result.cpu_us_per_req = (cpu_after - cpu_before) / result.requests * 1e6
        return result


# ------------------------------------------------------------------------------ Python client


async def _python_load(
    url: str, headers: dict[str, str], connections: int, duration: float, warmup: float
) -> dict[str, object]:
    import aiohttp

    latencies: list[float] = []
    non_200: dict[str, int] = {}
    socket_errors: dict[str, int] = {}
    started = time.perf_counter()
    measure_from = started + warmup
    measure_until = measure_from + duration
    sent = 0

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:

        async def worker() -> None:
            nonlocal sent
            while sent < MAX_REQUESTS:
                t0 = time.perf_counter()
                if t0 >= measure_until:
                    return
                sent += 1
                measured = t0 >= measure_from
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    t1 = time.perf_counter()
                    if measured and t1 <= measure_until:
                        name = type(exc).__name__
                        socket_errors[name] = socket_errors.get(name, 0) + 1
                    await asyncio.sleep(0.01)  # no busy loop against a dead server
                    continue
                t1 = time.perf_counter()
                if measured and t1 <= measure_until:
                    latencies.append(t1 - t0)
                    if status != 200:
                        non_200[str(status)] = non_200.get(str(status), 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))

    latencies.sort()
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    else:
        p50 = p99 = latencies[0] if latencies else 0.0
    return {
        "requests": len(latencies),
        "duration_s": duration,
        "rps": len(latencies) / duration,
        "p50_ms": p50 * 1000,
        "p99_ms": p99 * 1000,
        "mean_ms": (sum(latencies) / len(latencies) * 1000) if latencies else 0.0,
        "max_ms": (latencies[-1] * 1000) if latencies else 0.0,
        "non_200": non_200,
        "socket_errors": socket_errors,
    }


def run_python(
    url: str, headers: dict[str, str], connections: int, duration: float, warmup: float
) -> LoadResult:
    """The Python client in a separate process, so that it does not share the caller's loop."""
    cmd = [sys.executable, "-m", "bench.gateway.load", "--url", url, "-c", str(connections)]
    cmd += ["-d", str(duration), "-w", str(warmup)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    limit = warmup + duration + REQUEST_TIMEOUT + 60
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"the Python load generator did not finish within {limit:.0f}s") from exc
    if proc.returncode != 0:
        raise LoadError(f"the Python load generator failed (exit {proc.returncode}):\n{proc.stderr}".rstrip())
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return LoadResult(generator="python-aiohttp", connections=connections, **data)


def run_load(
    url: str,
    headers: dict[str, str],
    *,
    connections: int,
    duration: int,
    warmup: int,
    generator: str = "auto",
    server_pid: int | None = None,
) -> LoadResult:
    """`generator`: "wrk", "python", or "auto" (wrk when installed, else the Python client)."""
    if generator == "wrk" or (generator == "auto" and shutil.which("wrk")):
        return run_wrk(url, headers, connections, duration, warmup, server_pid)
    return run_python(url, headers, connections, duration, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=15.0)
    parser.add_argument("-w", "--warmup", type=float, default=3.0)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    result = run(_python_load(args.url, headers, args.connections, args.duration, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
