"""Sluice settings: one class, read from the environment and `.env`.

Every knob has a default that runs locally on the embedded stack (SQLite under ./var, an
in-process Redis-compatible store, the sandbox partner mounted at /sandbox).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ALL_SCOPES = ("partner", "orders", "directory", "throttling", "async_calls", "metrics", "admin")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # --- service -------------------------------------------------------------------------
    environment: str = "development"
    instance_name: str = "sluice"
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    # "json" for machines, "text" for a developer's terminal.
    log_format: str = "json"
    var_dir: Path = Path("var")
    # Background loops (comm-log writer, purge, notifier) run in this process when true; an
    # HTTP-only replica sets it false. The comm-log writer always runs: it owns the buffer.
    run_workers: bool = True
    # Freeze the objects built at start-up out of the garbage collector's generations, so
    # collections during requests scan far fewer objects (lower tail latency).
    gc_freeze: bool = True

    # --- storage -------------------------------------------------------------------------
    # Unset: SQLite under var_dir (embedded default). Postgres: postgresql+asyncpg://...
    database_url: str | None = None
    database_pool_size: int = 10
    # Unset: an in-process Redis-compatible store (fakeredis). Real: redis://host:6379/0
    redis_url: str | None = None
    # Prefix for every Redis key, so that several deployments (or test runs) share a server.
    redis_key_prefix: str = "sluice:"

    # --- security ------------------------------------------------------------------------
    # An admin key accepted without a database row (all scopes), for bootstrapping.
    bootstrap_admin_key: SecretStr | None = None
    bootstrap_org_id: str = "default"
    # Signs the web admin's session cookie. Unset: a random key per process (sessions end on
    # restart and do not cross replicas) — set it in production.
    secret_key: SecretStr | None = None
    # How long an authenticated API key is remembered in process memory; a revoked key stops
    # working on every replica within this many seconds.
    auth_cache_ttl: float = 30.0

    # --- partner connector (seed 000) -----------------------------------------------------
    # Unset: the sandbox partner of this process (public_url + /sandbox).
    partner_base_url: str | None = None
    partner_token_path: str = "/oauth/token"
    partner_client_id: str = "sandbox-client"
    partner_client_secret: SecretStr = SecretStr("sandbox-secret")
    # Seconds for a partner API call (connect + read).
    partner_timeout: float = 10.0
    # Seconds for the OAuth token request; the refresh lock is held longer than this.
    partner_token_timeout: float = 5.0
    # The cached token's TTL is expires_in minus this margin.
    token_safety_margin: float = 30.0
    # A token with less than this many seconds left is refreshed in the background while
    # callers keep using it.
    token_refresh_ahead: float = 60.0
    partner_max_connections: int = 100

    # --- circuit breaker -------------------------------------------------------------------
    breaker_fail_max: int = 5
    breaker_reset_timeout: float = 30.0

    # --- tracing ---------------------------------------------------------------------------
    # The exporter is chosen by the standard OTEL_TRACES_EXPORTER (otlp, console, none; default
    # none) and OTEL_EXPORTER_OTLP_* variables. Fraction of new traces sampled.
    trace_sample_ratio: float = 1.0
    tracing_enabled: bool = True
    # Who makes the server span of each request: "sluice" (a lean span in Sluice's own
    # middleware, ~10x cheaper per request) or "otel" (opentelemetry-instrumentation-fastapi,
    # with its richer attribute set). See the README's benchmark section for the costs.
    tracing_server_spans: Literal["sluice", "otel"] = "sluice"

    # --- communication log ------------------------------------------------------------------
    commlog_enabled: bool = True
    # Request and response bodies are cut at this many bytes in the log.
    commlog_body_limit: int = 4096
    commlog_flush_interval: float = 1.0
    commlog_batch_size: int = 500
    # Entries waiting to be written; past it the oldest are dropped (and counted).
    commlog_buffer_max: int = 50_000
    commlog_retention_days: float = 30.0
    commlog_purge_interval: float = 3600.0

    # --- error notifications (seed node S2) --------------------------------------------------
    notify_slack_webhook_url: str | None = None
    notify_datadog_url: str = "https://api.datadoghq.com/api/v1/events"
    notify_datadog_api_key: SecretStr | None = None
    # {account_id} is replaced by notify_newrelic_account_id.
    notify_newrelic_url: str = "https://insights-collector.newrelic.com/v1/accounts/{account_id}/events"
    notify_newrelic_account_id: str | None = None
    notify_newrelic_api_key: SecretStr | None = None
    # The same error fingerprint is sent at most once per window (seconds).
    notify_dedup_window: float = 300.0
    notify_queue_size: int = 1000
    notify_timeout: float = 5.0

    # --- sandbox partner ---------------------------------------------------------------------
    # Mount the sandbox partner at /sandbox. Unset: mounted only while PARTNER_BASE_URL is unset
    # (the embedded default points the connector at it), so a production deployment never
    # exposes a fake partner by accident.
    sandbox_enabled: bool | None = None
    sandbox_token_ttl: int = 3600

    @field_validator("trace_sample_ratio")
    @classmethod
    def _ratio_in_range(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError("trace_sample_ratio must be between 0 and 1")
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'sluice.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def mount_sandbox(self) -> bool:
        return self.sandbox_enabled if self.sandbox_enabled is not None else self.partner_base_url is None

    @property
    def effective_partner_base_url(self) -> str:
        return (self.partner_base_url or f"{self.public_url.rstrip('/')}/sandbox").rstrip("/")


@lru_cache
def get_settings() -> Settings:
    return Settings()
