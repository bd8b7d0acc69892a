"""Configuration from the environment (and an optional `.env`): one class per service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.domain.frequency_cap import normalize_caps
from shared.domain.retry import DEFAULT_RETRY_DELAYS_S


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/mailing"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefixes every exchange and queue so deployments and test runs sharing a broker never collide.
    amqp_namespace: str = "mailing"
    # Messages per send job: the scheduler packs up to this many of one mailing into one broker
    # message; the sender turns PREFETCH (messages) into a prefetch count of jobs with it.
    messages_per_job: int = Field(50, ge=1, le=1000)
    db_pool_size: int = Field(10, ge=1)
    db_statement_timeout_ms: int = Field(30_000, ge=100)
    # A session idle inside a transaction this long is ended by the server (its locks freed).
    db_idle_in_transaction_timeout_ms: int = Field(10_000, ge=100)
    log_level: str = "INFO"
    log_format: str = Field("auto", pattern="^(auto|json|console)$")
    # Port of the /healthz, /readyz and /metrics endpoint for services that are not the API.
    metrics_port: int = Field(9100, ge=0, le=65535)
    # Frequency caps over every mailing (docs/GUARDRAILS.md): `N/<period>`, comma-separated,
    # periods in m, h, d (`2/24h,5/7d`); unset or empty: off. Read by the api (the pre-send
    # check), the scheduler (fan-out) and the sender (the claim): set it alike for all three.
    frequency_cap: str | None = None

    @field_validator("frequency_cap", mode="before")
    @classmethod
    def _canonical_cap(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return normalize_caps(value)
        return value


class ApiSettings(BaseServiceSettings):
    api_host: str = "0.0.0.0"  # noqa: S104 - the API is meant to be reachable in its container
    api_port: int = Field(8000, ge=1, le=65535)
    # Comma-separated bearer tokens accepted by the admin API; empty means every request is refused.
    # An entry `name:role:token` (role admin or viewer) names the token; a bare token is an admin
    # named by its position (token-1, token-2, ...). Parsed by services/api/auth.py.
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    # Audit entries older than this many days are deleted by the api (unset: kept for ever),
    # checked every AUDIT_PRUNE_INTERVAL_S.
    audit_retention_days: int | None = Field(None, ge=1)
    audit_prune_interval_s: float = Field(3600.0, gt=0)
    # The CSV import (POST /api/v1/clients/imports): largest file accepted (413 above it), and
    # the statement timeout of an import's or an export's transaction (its upload included).
    import_max_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    bulk_timeout_s: float = Field(900.0, gt=0)
    # Exports and imports one api replica runs at once: each holds a pooled connection while
    # its client reads or sends, so more are refused (429, Retry-After) to keep the rest of the
    # pool for /readyz, the console and the other requests. Unset: two thirds of DB_POOL_SIZE.
    bulk_concurrency: int | None = Field(None, ge=1)
    # Failed authentications (wrong API token, failed console sign-in) one source address may
    # make per minute on one replica; then 429 until the minute is over.
    auth_failures_per_minute: int = Field(20, ge=1)
    # POST /api/v1/mailings/{id}/test: test sends per token (or console user) per minute,
    # counted in the database so every api replica shares the budget (429 above it).
    test_sends_per_minute: int = Field(10, ge=1, le=1000)
    # A mailing to more recipients than this waits `awaiting_approval` until an admin other
    # than its creator approves it (docs/GUARDRAILS.md); unset or empty: off.
    approval_threshold: int | None = Field(None, ge=0)

    @field_validator("approval_threshold", mode="before")
    @classmethod
    def _empty_threshold_is_off(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # The providers the api shows and takes Kannel receipts for (docs/PROVIDERS.md).
    providers_file: Path | None = None
    # Replies through Kannel's sms-service that opt a client out (as the sender's STOP_WORDS).
    stop_words: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["STOP", "СТОП", "ОТПИСКА"]
    )

    @field_validator("stop_words", mode="before")
    @classmethod
    def _split_stop_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: object) -> object:
        if isinstance(value, str):
            return [token.strip() for token in value.split(",") if token.strip()]
        return value

    # --- console sign-in (OpenID Connect; docs/SIGN-IN.md) ---------------------------------
    # Unset: the console at /ui/ answers a page saying single sign-on is not configured.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    # The client secret; or OIDC_CLIENT_SECRET_FILE (a mounted Secret), read at start.
    oidc_client_secret: SecretStr | None = None
    oidc_client_secret_file: Path | None = None
    # client_secret_basic (HTTP Basic) or client_secret_post (in the token request's body).
    oidc_token_auth_method: str = Field(
        "client_secret_basic", pattern="^(client_secret_basic|client_secret_post)$"
    )
    oidc_scopes: str = "openid profile email groups"
    # Where the groups are: a claim name or a dot path into nested claims (realm_access.roles).
    oidc_groups_claim: str = "groups"
    oidc_admin_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_viewer_groups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The console's public URL; the provider redirects back to {UI_BASE_URL}/ui/auth/callback.
    ui_base_url: str = "http://127.0.0.1:8000"
    # Signs the short-lived sign-in state (PKCE verifier, state, nonce); or UI_SESSION_SECRET_FILE.
    # Unset: a random one per process, fine for one replica (set it when running several).
    ui_session_secret: SecretStr | None = None
    ui_session_secret_file: Path | None = None
    # A console session ends after this long without a request, and this long after sign-in.
    ui_session_idle_s: int = Field(3600, ge=60)
    ui_session_max_age_s: int = Field(12 * 3600, ge=60)
    # A session's groups are read again at the provider this often (on a person's request);
    # a session whose groups no longer give its role ends (docs/SIGN-IN.md).
    ui_groups_recheck_s: int = Field(300, ge=1)

    @field_validator("oidc_admin_groups", "oidc_viewer_groups", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            return [group.strip() for group in value.split(",") if group.strip()]
        return value

    @field_validator("ui_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("UI_BASE_URL must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _bulk_below_pool(self) -> ApiSettings:
        if self.bulk_concurrency is not None and self.bulk_concurrency >= max(2, self.db_pool_size):
            raise ValueError(
                "BULK_CONCURRENCY must be below DB_POOL_SIZE: exports and imports would"
                " otherwise take every connection, /readyz included"
            )
        return self

    @property
    def bulk_limit(self) -> int:
        """BULK_CONCURRENCY, or two thirds of the pool (at least one)."""
        return self.bulk_concurrency or max(1, self.db_pool_size * 2 // 3)

    @model_validator(mode="after")
    def _read_secret_files(self) -> ApiSettings:
        if self.oidc_client_secret is None and self.oidc_client_secret_file is not None:
            secret = self.oidc_client_secret_file.read_text().strip()
            self.oidc_client_secret = SecretStr(secret)
        if self.ui_session_secret is None and self.ui_session_secret_file is not None:
            self.ui_session_secret = SecretStr(self.ui_session_secret_file.read_text().strip())
        return self

    @property
    def sso_configured(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)


class SchedulerSettings(BaseServiceSettings):
    metrics_port: int = Field(9101, ge=0, le=65535)
    poll_interval_s: float = Field(2.0, gt=0)
    # Matching clients turned into message rows per fan-out transaction (a mailing's first
    # chunk is smaller, so its first sends start at once).
    fanout_chunk_size: int = Field(20_000, ge=1)
    # Most live leases (queued + sending) in the broker; the database holds the rest. Below
    # this the cap follows the senders' drain rate: LEASE_CAP_HORIZON_S of their work.
    lease_cap: int = Field(5_000, ge=1)
    # Seconds of work the lease cap holds (at most a quarter of LEASE_TTL_S). The send queue
    # is FIFO: a new mailing's first jobs wait behind about this much of the others' work.
    lease_cap_horizon_s: float = Field(2.0, gt=0, le=3600)
    lease_batch_size: int = Field(1_000, ge=1)
    lease_ttl_s: float = Field(120.0, gt=0)
    # The most rows one sweep statement changes; it halves after a statement that hit
    # SWEEP_STATEMENT_TIMEOUT_S and grows back while chunks are fast.
    sweep_batch_size: int = Field(50_000, ge=1)
    sweep_statement_timeout_s: float = Field(5.0, gt=0)
    # How often the status counters' deltas are folded (the dashboard's chart lags by this),
    # and how often the scheduler vacuums the small tables they churn.
    fold_interval_s: float = Field(0.5, gt=0)
    vacuum_interval_s: float = Field(60.0, gt=0)
    # Messages of mailings that finished longer ago than this many days (fractions allowed)
    # are dropped, a partition of `message` at a time; unset: kept for ever. Checked at start
    # and every RETENTION_INTERVAL_S, which also deletes `message_minute` rows older than two
    # days (docs/RETENTION.md).
    message_retention_days: float | None = Field(None, gt=0)
    retention_interval_s: float = Field(3600.0, gt=0)

    @field_validator("message_retention_days", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `MESSAGE_RETENTION_DAYS=` (compose's `${MESSAGE_RETENTION_DAYS:-}`) means keep all.
        return None if isinstance(value, str) and not value.strip() else value


# What the sending lease adds to two request timeouts: the claim, the result write, a slow loop.
SENDING_LEASE_SLACK_S = 2.0


class SenderSettings(BaseServiceSettings):
    metrics_port: int = Field(9102, ge=0, le=65535)
    provider_url: str = "http://127.0.0.1:8090"
    # The provider JWT; or PROVIDER_TOKEN_FILE, re-read when it changes (token rotation).
    provider_token: SecretStr | None = None
    provider_token_file: Path | None = None
    # Providers and routes (docs/PROVIDERS.md); when set it wins over PROVIDER_URL/_TOKEN.
    providers_file: Path | None = None
    provider_timeout_s: float = Field(10.0, gt=0)
    # Never start a request closer than this to the mailing's end time (about the provider's p99).
    end_safety_margin_s: float = Field(2.0, ge=0)
    max_connections: int = Field(256, ge=1)
    prefetch: int = Field(512, ge=1)
    batch_size: int = Field(100, ge=1)
    batch_linger_ms: float = Field(5.0, ge=0)
    batches_in_flight: int = Field(8, ge=1)
    max_attempts: int = Field(20, ge=1)
    # The delay tiers of retries (see shared.domain.retry): seconds for isolated failures,
    # minutes only for a message failing a dozen times; an outage is the breaker's.
    retry_delays_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_DELAYS_S)
    )
    rate_limit_per_s: float | None = Field(None, gt=0)
    breaker_failure_threshold: int = Field(20, ge=1)
    breaker_cooldown_s: float = Field(1.0, gt=0)
    # Short: while open, released messages wait for the reopening, so this bounds recovery.
    breaker_max_cooldown_s: float = Field(4.0, gt=0)
    # How long a claimed ('sending') message is protected from the reaper, so how long a killed
    # sender's messages stall: must exceed twice the timeout (a claimed message may wait for
    # one request ahead of it, then runs its own). Unset: 2 x PROVIDER_TIMEOUT_S + 2 s.
    sending_lease_s: float = Field(2 * 10.0 + SENDING_LEASE_SLACK_S, gt=0)
    # Replies by SMS that opt a client out: exactly one of these, case and spaces ignored.
    stop_words: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["STOP", "СТОП", "ОТПИСКА"]
    )
    # Receipts that came before their message's provider id was written wait this long for it,
    # then count as unknown; `match_pending` runs every RECEIPT_MATCH_INTERVAL_S.
    receipt_hold_s: float = Field(3600.0, gt=0)
    receipt_match_interval_s: float = Field(2.0, gt=0)
    # max_tps is shared among the senders whose provider_status heartbeat is this recent.
    sender_heartbeat_ttl_s: float = Field(6.0, gt=0)

    @field_validator("stop_words", mode="before")
    @classmethod
    def _split_words(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("retry_delays_s", mode="before")
    @classmethod
    def _split_delays(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(part) for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _lease_outlasts_request(self) -> SenderSettings:
        if "sending_lease_s" not in self.model_fields_set:
            self.sending_lease_s = 2 * self.provider_timeout_s + SENDING_LEASE_SLACK_S
        # A claimed message may wait for one request ahead of it, then runs its own.
        if self.sending_lease_s <= 2 * self.provider_timeout_s:
            raise ValueError("SENDING_LEASE_S must exceed twice PROVIDER_TIMEOUT_S")
        return self

    @field_validator("retry_delays_s")
    @classmethod
    def _sorted_delays(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value) or value != sorted(value):
            raise ValueError("retry delays must be positive and ascending")
        return value


@lru_cache
def api_settings() -> ApiSettings:
    return ApiSettings()
