"""`python -m app keys create|list|revoke` against the test database."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_create_list_revoke(database_url: str) -> None:
    created = _cli(
        database_url, "keys", "create", "--name", "cli-test", "--org", "acme", "--scopes", "partner,orders"
    )
    assert created.returncode == 0, created.stderr
    lines = dict(
        line.split(":", 1) for line in created.stdout.splitlines() if ":" in line and not line.startswith("(")
    )
    client_id, key = lines["id"].strip(), lines["key"].strip()
    assert key.startswith("sk_")

    listed = _cli(database_url, "keys", "list")
    assert client_id in listed.stdout and key not in listed.stdout

    revoked = _cli(database_url, "keys", "revoke", client_id)
    assert revoked.returncode == 0, revoked.stderr
    assert client_id not in _cli(database_url, "keys", "list").stdout
    assert client_id in _cli(database_url, "keys", "list", "--all").stdout


def test_bad_input_is_reported(database_url: str) -> None:
    bad_scope = _cli(database_url, "keys", "create", "--name", "x", "--org", "o", "--scopes", "root")
    assert bad_scope.returncode == 2 and "unknown scope" in bad_scope.stderr
    missing = _cli(database_url, "keys", "revoke", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1
    garbage = _cli(database_url, "keys", "revoke", "not-a-uuid")
    assert garbage.returncode == 1
