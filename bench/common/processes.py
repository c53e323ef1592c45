"""The benchmarks' child processes: start, wait until ready, find the serving pid, stop.

Every child runs in its own process group (Ctrl-C reaches the benchmark only, which then stops the
children in order), and gets SIGTERM from the kernel if the benchmark dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.common.cpu import process_stats

READY_TIMEOUT = 30.0
HEALTH_PATH = "/_bench/health"  # served by every fake server (bench.common.serving)


class BenchError(RuntimeError):
    pass


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM if the benchmark dies without cleaning up (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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

    def last_output(self) -> str:
        return f"--- last lines of its output ({self.log}) ---\n{self.tail()}"

    def exited(self) -> str:
        """The report of a child that stopped while it was needed."""
        return f"{self.name} exited with code {self.proc.returncode}.\n{self.last_output()}"

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


def first_exited(children: Iterable[Child]) -> str | None:
    """The report of the first of `children` that is no longer running, if any."""
    return next((child.exited() for child in children if not child.alive()), None)


class Children:
    """Every process the benchmark starts; `close()` stops them all, newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, *, pipes: bool = False
    ) -> Child:
        """Start `cmd` from the repository root, its output to a log of its own. With `pipes`, its
        stdin and stdout are pipes to the benchmark (a command protocol) and only stderr is logged."""
        log = self.log_dir / f"{len(self.children):02d}-{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else out,
                stderr=out if pipes else subprocess.STDOUT,
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
                f"{child.last_output()}"
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
        f"{child.name} was not ready within {READY_TIMEOUT:.0f}s ({url}: {last}).\n{child.last_output()}"
    )


def start_fake_server(children: Children, name: str, module: str, *, wait: bool = True) -> tuple[Child, str]:
    """`python -m <module> --port <free port>` (a `bench.common.serving` server): the child and its
    base URL. `wait=False` leaves the readiness wait (`HEALTH_PATH`) to the caller, so that
    several can start together."""
    port = free_port()
    child = children.start(name, [sys.executable, "-m", module, "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    if wait:
        wait_ready(child, base + HEALTH_PATH)
    return child, base


# ----------------------------------------------------------------------------------- Sluice


def uvicorn_cmd(app: str, port: int, *, factory: bool = False, workers: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", app]
    if factory:
        cmd.append("--factory")
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return [*cmd, "--no-access-log", "--log-level", "warning"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (Linux; empty elsewhere)."""
    return [kid for kid, stat in process_stats() if int(stat.rsplit(")", 1)[1].split()[1]) == pid]


def server_pid(child: Child) -> int:
    """The process that serves the requests, whose CPU time is measured.

    `uvicorn --workers 1` serves in the process we started (no reloader, no supervisor); should it
    ever hand the work to one worker process instead (a multiprocessing spawn, or a re-exec'd
    uvicorn), that single worker is the one to read, not its idle parent.
    """
    workers = server_pids(child)
    return workers[0] if len(workers) == 1 else child.proc.pid


def server_pids(child: Child, expected: int = 1) -> list[int]:
    """The processes that serve the requests: uvicorn's worker processes when it runs several
    (`--workers N`, each a multiprocessing spawn of the supervisor we started), else the process
    we started. With `expected` workers, the later ones may still be starting when the first
    answers the health check: wait a little (10 s at most) for all of them."""
    deadline = time.monotonic() + 10
    while True:
        workers = [
            pid
            for pid in child_pids(child.proc.pid)
            if "spawn_main" in (cmd := _cmdline(pid)) or "uvicorn" in cmd
        ]
        if len(workers) >= expected or time.monotonic() >= deadline:
            return workers or [child.proc.pid]
        time.sleep(0.1)


def sluice_env(
    upstream_url: str,
    admin_key: str,
    database_url: str,
    redis_url: str,
    redis_key_prefix: str,
    overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """The full Sluice environment (every feature on, as deployed), then `overrides`."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=redis_key_prefix,
        PARTNER_BASE_URL=upstream_url,
        BOOTSTRAP_ADMIN_KEY=admin_key,
        SANDBOX_ENABLED="false",
        LOG_LEVEL="WARNING",
        TRACING_ENABLED="true",
        TRACE_SAMPLE_RATIO="1.0",
        COMMLOG_ENABLED="true",
    )
    env.setdefault("OTEL_TRACES_EXPORTER", "none")
    env.update(overrides or {})
    return env


def check_sluice_present() -> None:
    main = ROOT / "app" / "main.py"
    if not main.is_file() or "def create_app" not in main.read_text(errors="replace"):
        raise BenchError(
            f"Sluice cannot start: {main.relative_to(ROOT)} with create_app() does not exist yet. "
            "Run `python -m bench.gateway --only baseline` until it does."
        )


# ---------------------------------------------------------------------------------- signals


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: the same clean-up runs for both."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM does what Ctrl-C does. Inside asyncio.run that is cancelling the main task (the
    runner's SIGINT handler), so that every `finally` runs; outside it, KeyboardInterrupt."""

    def handler(signum: int, frame: Any) -> None:
        signal.raise_signal(signal.SIGINT)

    # A background job of a non-interactive shell starts with SIGINT ignored, and then neither
    # Ctrl-C's KeyboardInterrupt nor asyncio.run's handler would see the raised SIGINT: restore
    # Python's own handler first (asyncio.run only installs its handler over that one).
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
