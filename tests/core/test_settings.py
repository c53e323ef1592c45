"""Settings defaults that protect a deployment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_sandbox_is_mounted_only_for_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTNER_BASE_URL", raising=False)
    monkeypatch.delenv("SANDBOX_ENABLED", raising=False)
    assert Settings(_env_file=None).mount_sandbox  # type: ignore[call-arg]
    assert not Settings(_env_file=None, partner_base_url="https://partner.example").mount_sandbox  # type: ignore[call-arg]
    assert Settings(_env_file=None, partner_base_url="https://p.example", sandbox_enabled=True).mount_sandbox  # type: ignore[call-arg]


def test_embedded_default_uses_sqlite_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "PARTNER_BASE_URL", "PUBLIC_URL", "VAR_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.effective_database_url == "sqlite+aiosqlite:///var/sluice.db"
    assert settings.effective_partner_base_url == "http://127.0.0.1:8000/sandbox"


def test_sample_ratio_is_checked() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, trace_sample_ratio=1.5)  # type: ignore[call-arg]


def test_secrets_do_not_show_in_repr() -> None:
    settings = Settings(_env_file=None, partner_client_secret="s3cr3t", bootstrap_admin_key="adm1n")  # type: ignore[call-arg]
    assert "s3cr3t" not in repr(settings) and "adm1n" not in repr(settings)


def test_every_setting_is_documented_in_env_example() -> None:
    from tests.support import ROOT

    text = (ROOT / ".env.example").read_text().upper()
    missing = [name for name in Settings.model_fields if f"{name.upper()}=" not in text]
    assert missing == []
