"""Scratch Postgres databases, migrations and Redis keys of a benchmark run.

The benches that create a database name it per run and drop it at the end (failures and Ctrl-C
too); their Redis keys go under a per-run prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import asyncpg

from bench.common import ROOT
from bench.common.processes import BenchError, die_with_parent

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """--postgres-url and --redis-url, for a bench that creates its own databases."""
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="the Postgres server (any database on it; env BENCH_POSTGRES_URL); "
        "a fresh database is created there and dropped at the end",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help="env BENCH_REDIS_URL",
    )


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def database_url(server_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _execute(server_url: str, statement: str) -> None:
    """One statement on a connection of its own (CREATE/DROP DATABASE run outside a transaction)."""
    conn = await asyncpg.connect(asyncpg_dsn(server_url), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(server_url: str, name: str) -> None:
    await _execute(server_url, f"CREATE DATABASE {quoted(name)}")


async def drop_database(server_url: str, name: str) -> None:
    await _execute(server_url, f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")


def drop_databases(server_url: str, names: list[str]) -> None:
    """At the end of a run: a database that cannot be dropped is reported, not raised, so that
    the run's figures are still printed."""
    for name in names:
        try:
            asyncio.run(drop_database(server_url, name))
        except Exception as exc:
            print(f"could not drop database {name}: {exc!r}", file=sys.stderr)


def run_to_end(args: list[str], label: str, env: dict[str, str], log: Path, timeout: float = 180) -> None:
    """`python <args>` from the repository root, to its end, its output written to `log`; a
    BenchError with the output's last lines when it fails or runs over `timeout` seconds."""
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`{label}` did not finish within {timeout:.0f} s") from exc
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).rstrip().splitlines()[-30:])
        raise BenchError(f"`{label}` failed (exit {proc.returncode}):\n{tail}")


def migrate(env: dict[str, str], log_dir: Path) -> None:
    """Sluice's migrations on the database of `env` (DATABASE_URL), as deployed."""
    run_to_end(["-m", "app", "migrate"], "python -m app migrate", env, log_dir / "migrate.log")


def delete_redis_keys(redis_url: str, prefix: str) -> int:
    """Delete every key under `prefix`; how many there were. Raises redis.RedisError."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        return len(keys)
    finally:
        client.close()


def clear_redis_prefix(redis_url: str, prefix: str) -> None:
    """At the end of a run: best effort, an unreachable Redis must not hide the figures."""
    import redis

    with contextlib.suppress(redis.RedisError):
        delete_redis_keys(redis_url, prefix)
