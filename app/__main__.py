"""Command line: `python -m app keys create|list|revoke`, `dev-key`, `migrate`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from app.clients import service as clients
from app.db import create_engine, create_sessionmaker
from app.settings import ALL_SCOPES, Settings, get_settings


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


async def _with_session(settings: Settings, work):  # type: ignore[no-untyped-def]
    engine = create_engine(settings)
    try:
        async with create_sessionmaker(engine).begin() as session:
            return await work(session)
    finally:
        await engine.dispose()


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest revision."""
    from alembic.config import Config

    from alembic import command

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(config, "head")


async def _create(settings: Settings, args: argparse.Namespace) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        clients.validate_scopes(scopes)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    client, key = await _with_session(
        settings, lambda s: clients.create_client(s, name=args.name, org_id=args.org, scopes=scopes)
    )
    _out(
        f"id:     {client.id}\nname:   {client.name}\norg:    {client.org_id}\nscopes: {','.join(client.scopes)}"
    )
    _out(f"key:    {key}\n(the key is shown once; store it now)")
    return 0


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    rows = await _with_session(settings, lambda s: clients.list_clients(s, include_revoked=args.all))
    _out(f"{'id':36}  {'name':24}  {'org':16}  {'prefix':10}  {'active':6}  scopes")
    for c in rows:
        _out(
            f"{c.id!s:36}  {c.name[:24]:24}  {c.org_id[:16]:16}  {c.key_prefix:10}  {c.is_active!s:6}  {','.join(c.scopes)}"
        )
    return 0


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    try:
        client = await _with_session(settings, lambda s: clients.revoke_client(s, args.id))
    except ValueError:
        client = None
    if client is None:
        sys.stderr.write(f"error: no API client with id {args.id}\n")
        return 1
    _out(
        f"revoked {client.id} ({client.name}); replicas stop accepting it within {settings.auth_cache_ttl:g} s"
    )
    return 0


async def _dev_key(settings: Settings, args: argparse.Namespace) -> int:
    """Print the development key, creating it (all scopes) on first use."""
    path = settings.var_dir / "dev-api-key"
    if path.exists():
        key = path.read_text().strip()

        async def exists(session):  # type: ignore[no-untyped-def]
            return await clients.find_by_key_hash(session, clients.hash_key(key))

        if key and await _with_session(settings, exists):
            _out(key)
            return 0
    _, key = await _with_session(
        settings, lambda s: clients.create_client(s, name="development", org_id="dev", scopes=ALL_SCOPES)
    )
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    _out(key)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Sluice administration")
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create an API client and print its key once")
    create.add_argument("--name", required=True)
    create.add_argument("--org", required=True, help="organisation id")
    create.add_argument("--scopes", required=True, help=f"comma-separated: {','.join(ALL_SCOPES)}")
    lst = keys.add_parser("list", help="list API clients")
    lst.add_argument("--all", action="store_true", help="include revoked clients")
    revoke = keys.add_parser("revoke", help="revoke an API client")
    revoke.add_argument("id")
    sub.add_parser("dev-key", help="print (creating if needed) the development API key")
    sub.add_parser("migrate", help="upgrade the database schema to the newest revision")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "dev-key":
        return asyncio.run(_dev_key(settings, args))
    handler = {"create": _create, "list": _list, "revoke": _revoke}[args.action]
    return asyncio.run(handler(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
