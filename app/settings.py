"""Sluice settings: one class, read from the environment and `.env`.

Every knob has a default that runs locally on the embedded stack (SQLite under ./var, an
in-process Redis-compatible store, the sandbox partner mounted at /sandbox).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ALL_SCOPES = (
    "partner",
    "orders",
    "directory",
    "directory_credentials",
    "throttling",
    "async_calls",
    "metrics",
    "admin",
)


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
    # Below the concurrency served, overflow connections churn (open, TLS, close) per request.
    database_pool_size: int = 20
    # A pooled connection idle this many seconds is checked (one round trip) before use; busy
    # connections are not (a check on every use costs a round trip per transaction).
    database_ping_after_idle: float = 2.0
    # Unset: an in-process Redis-compatible store (fakeredis). Real: redis://host:6379/0
    redis_url: str | None = None
    # Prefix for every Redis key, so that several deployments (or test runs) share a server.
    redis_key_prefix: str = "sluice:"
    # Connections to Redis per process. When all are busy a command waits for one (up to the
    # socket timeout) instead of failing: a burst of throttled calls queues here, not as errors.
    redis_max_connections: int = 64

    # --- throttling (seed 004) ----------------------------------------------------------
    # Base path of the throttling-configuration API: a client of the original changes only its
    # base URL.
    throttling_base_path: str = "/authoring"
    # Sandboxes that exist (others answer error 4000), and those that are production (the
    # only ones where configurations may be managed; others answer 1463). Comma-separated.
    throttling_sandboxes: str = "prod,dev,stage"
    throttling_production_sandboxes: str = "prod"
    # How long an outbound call may wait for its slot before it is queued (if it can go
    # asynchronous) or refused with 429.
    throttle_max_wait: float = 2.0
    # How far ahead a call that can go asynchronous may be queued (the original: 6 hours).
    throttle_queue_horizon: float = 21_600.0
    # Slots are spaced 1/(maxThroughput x (1 - margin)) apart: the margin absorbs the jitter
    # between a slot and the moment the call leaves, so no second carries more than the limit.
    throttle_safety_margin: float = 0.0075
    # How often each replica checks the rules' version key (besides pub/sub messages).
    throttle_refresh_interval: float = 0.5
    # The airlock takes a queued call this early and waits for its slot in memory.
    throttle_queue_lookahead: float = 1.0
    # After an undeploy, calls queued under the old runtime version still run this long.
    throttle_undeploy_grace: float = 86_400.0

    # --- two-way order sync -----------------------------------------------------------------
    # The other instance (A's peer is B and B's is A). Unset: no sync. INSTANCE_NAME must differ
    # between the two: it tells whose change a version is.
    sync_peer_url: str | None = None
    # An API key of the peer with the `orders` scope.
    sync_peer_api_key: SecretStr | None = None
    # Seconds between sync rounds (a round pulls the peer's feed and pushes local changes).
    sync_interval: float = 2.0
    # Orders per pull page and per push request (at most 1000); push requests in flight at once.
    sync_batch_size: int = Field(default=250, ge=1, le=1000)
    sync_push_concurrency: int = Field(default=2, ge=1, le=32)
    # A round alternates a pull page and a push step until both are caught up, at most this many
    # times; then the next round starts at once (so a round always ends and reports).
    sync_round_steps: int = Field(default=20, ge=1)
    # Longest wait between rounds while the peer keeps failing (doubling from SYNC_INTERVAL).
    sync_max_backoff: float = 60.0
    # Seconds the peer has to answer one request.
    sync_timeout: float = 10.0

    # --- service directory -------------------------------------------------------------------
    # Encrypts the services' stored credentials (a Fernet key, or any passphrase). Unset: derived
    # from SECRET_KEY; neither (embedded default only): a key file var/directory.key.
    directory_secret_key: SecretStr | None = None
    # Seconds between health checks of the registered services, and each check's timeout.
    directory_health_interval: float = 30.0
    directory_health_timeout: float = 5.0

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

    # --- async-call airlock (seed 001) -----------------------------------------------------
    # Defaults of a connector with no stored settings: attempts per phase, and the first retry
    # delay in seconds, doubled after each failed attempt (13 and 30 s: ~2.8 days of retries).
    airlock_ttl: int = 13
    airlock_delay: float = 30.0
    # Each backoff delay is spread by up to this fraction, so retries of a burst do not align.
    airlock_jitter: float = 0.1
    # Calls a worker process handles at once, and rows it claims per query.
    airlock_concurrency: int = 64
    airlock_batch_size: int = 100
    # Seconds a claimed call belongs to its worker; past it (the worker died) it is claimed again.
    airlock_lease: float = 120.0
    # Polling backstop of the Postgres LISTEN/NOTIFY wake-up, in seconds.
    airlock_poll_interval: float = 2.0
    # At shutdown, running calls get this many seconds to finish; the rest are released.
    airlock_shutdown_grace: float = 10.0
    # Seconds the $reply receiver has to answer 2xx.
    airlock_reply_timeout: float = 15.0
    # A receiver's Retry-After is honoured up to this many seconds.
    airlock_retry_after_max: float = 86_400.0
    # Largest request body accepted for later execution, in bytes.
    airlock_max_body: int = 1_048_576
    # Finished calls (DONE, *_ERROR, CANCELLED) are deleted after this many days.
    airlock_retention_days: float = 90.0
    airlock_cleanup_interval: float = 3600.0
    # A rotated-out webhook secret keeps signing (second signature) for this many hours.
    webhook_secret_overlap_hours: float = 24.0
    # $reply and error URLs: private, loopback and link-local addresses are refused unless allowed.
    reply_url_allow_loopback: bool = False
    reply_url_allow_private: bool = False
    # Comma-separated host names (or *.suffix patterns). Allow list: when set, only these hosts;
    # deny list: never these hosts.
    reply_url_allow_hosts: str = ""
    reply_url_deny_hosts: str = ""

    # --- e-mail (airlock error reports) -------------------------------------------------------
    # Unset host: no e-mail is sent (error URLs and notifiers still are).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # "starttls" upgrades a plain connection, "tls" connects with TLS (port 465), "none" is plain.
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_from: str = "sluice@localhost"
    smtp_timeout: float = 10.0

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

    @field_validator("throttle_safety_margin")
    @classmethod
    def _margin_in_range(cls, value: float) -> float:
        if not 0.0 <= value < 0.5:
            raise ValueError("throttle_safety_margin must be at least 0 and below 0.5")
        return value

    @property
    def known_sandboxes(self) -> frozenset[str]:
        names = self.throttling_sandboxes.split(",") + self.throttling_production_sandboxes.split(",")
        return frozenset(n.strip() for n in names if n.strip())

    @property
    def production_sandboxes(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.throttling_production_sandboxes.split(",") if n.strip())

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
