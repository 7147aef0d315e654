"""Settings every mtm service reads from the environment (prefix `MTM_`); no secret has a default."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mtm.platform.connection import NatsClient

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class NatsSettings(BaseSettings):
    """How a client reaches NATS (`MTM_NATS_…`): URL(s), user and password, TLS. No secret has a default.

    Production: `MTM_NATS_TLS_CA` names the CA bundle the servers' certificates are verified against (a `tls://`
    URL with no CA uses the system's), `MTM_NATS_TLS_CERT`/`MTM_NATS_TLS_KEY` a client certificate when the
    servers require mutual TLS.
    """

    model_config = SettingsConfigDict(env_prefix="MTM_", extra="ignore", frozen=True)

    nats_url: str = DEFAULT_NATS_URL
    nats_user: str | None = Field(default=None, description="This client's NATS user (one per service or tool).")
    nats_password: SecretStr | None = None
    nats_tls_ca: str | None = Field(default=None, description="CA bundle (PEM) that signed the servers' certificates.")
    nats_tls_cert: str | None = Field(default=None, description="Client certificate (PEM), for mutual TLS.")
    nats_tls_key: str | None = Field(default=None, description="The client certificate's private key (PEM).")

    def nats(self) -> NatsClient:
        return NatsClient(
            url=self.nats_url,
            user=self.nats_user,
            password=self.nats_password,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
        )


class ServiceSettings(NatsSettings):
    """Connection and tuning knobs shared by all services.

    `MTM_DATABASE_URL` names a Postgres server; each service keeps its own database on it (`mtm_<service>`),
    unless `MTM_<SERVICE>_DATABASE_URL` gives a full URL of its own (with the service's own role, and
    `?sslmode=verify-full&sslrootcert=<CA file>` for TLS).
    """

    model_config = SettingsConfigDict(env_prefix="MTM_", extra="ignore", frozen=True)

    service: str = "mtm"
    database_url: str = DEFAULT_DATABASE_URL
    database_name: str | None = Field(default=None, description="Overrides the service's database name.")
    log_level: str = "INFO"
    log_format: str = Field(default="json", description="`json` for machines, `console` for people.")

    batch_size: int = Field(default=256, ge=1, le=10_000, description="Messages fetched and applied per transaction.")
    fetch_timeout_s: float = Field(default=0.02, gt=0, description="How long a fetch waits to fill a batch.")
    max_deliver: int = Field(default=5, ge=1, description="Deliveries before a failing message is dead-lettered.")
    max_message_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Inbound messages larger than this are parked unread."
    )
    ack_wait_s: float = Field(default=30.0, gt=0)
    outbox_poll_s: float = Field(default=0.5, gt=0, description="Relay poll interval when nothing wakes it.")
    pool_min_size: int = 1
    pool_max_size: int = 4
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas of streams this service owns.")
    duplicate_window_s: float = Field(default=600.0, gt=0, description="Nats-Msg-Id deduplication window.")
    intake_max_age_s: float = Field(
        default=7 * 86_400.0,
        ge=0,
        description="How long the intake streams (raw discharges and fills, as sent) keep a message; 0 = for ever.",
    )
    dead_letter_max_age_s: float = Field(
        default=30 * 86_400.0,
        ge=0,
        description="How long dead letters and their stored bodies are kept for review and redrive; 0 = for ever.",
    )
    startup_timeout_s: float = Field(default=60.0, gt=0, description="How long to wait for streams owned elsewhere.")
    consumer_groups: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Groups of patient partitions per consumer (1, 2, 4, 8 or 16); each is consumed by one replica.",
    )
    replicas: int = Field(default=1, ge=1, description="How many replicas of this service run.")
    replica_index: int = Field(default=0, ge=0, description="This replica's number, 0 to replicas - 1.")
    seal_events: bool = Field(
        default=True, description="Write patient events with their data encrypted under the patient's key."
    )
    key_encryption_key: SecretStr | None = Field(
        default=None, description="Base64 of 32 bytes: wraps the patients' keys (the key keeper, reconciliation)."
    )
    key_encryption_key_file: str | None = Field(default=None, description="A file holding `key_encryption_key`.")
    actor_public_keys: str | None = Field(
        default=None,
        description="PEM public key(s) of the issuers of actor tokens (the web app); several may be concatenated.",
    )
    actor_public_keys_file: str | None = Field(default=None, description="A file holding `actor_public_keys`.")
    command_apply_wait_s: float = Field(
        default=5.0, gt=0, description="How long a command waits for its events to show in queries before replying."
    )
    takeover_after_s: float = Field(
        default=10.0, gt=0, description="How long a group must be left unowned before another replica takes it."
    )
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /healthz, /readyz and /metrics over HTTP on this port (0: any free port); unset: off.",
    )
    http_host: str = Field(default="127.0.0.1", description="Address the health and metrics server listens on.")

    @model_validator(mode="after")
    def _groups_divide_partitions(self) -> ServiceSettings:
        if 16 % self.consumer_groups:
            raise ValueError("consumer_groups must divide the 16 patient partitions: 1, 2, 4, 8 or 16")
        if self.replica_index >= self.replicas:
            raise ValueError("replica_index must be below replicas")
        return self

    @property
    def nats_servers(self) -> list[str]:
        return nats_servers(self.nats_url)

    def kek(self) -> bytes:
        """The key-encryption key the key keeper wraps patients' keys with (there is no default)."""
        import base64

        text = self.key_encryption_key.get_secret_value() if self.key_encryption_key else None
        if text is None and self.key_encryption_key_file:
            with open(self.key_encryption_key_file, encoding="utf-8") as handle:
                text = handle.read().strip()
        if not text:
            raise ValueError("the key keeper needs MTM_KEY_ENCRYPTION_KEY or MTM_KEY_ENCRYPTION_KEY_FILE")
        key = base64.b64decode(text)
        if len(key) != 32:
            raise ValueError("MTM_KEY_ENCRYPTION_KEY must be the base64 of 32 bytes")
        return key

    def actor_keys(self) -> list[str]:
        """Each configured public key as its own PEM text."""
        text = self.actor_public_keys or ""
        if self.actor_public_keys_file:
            with open(self.actor_public_keys_file, encoding="utf-8") as handle:
                text += "\n" + handle.read()
        marker = "-----BEGIN PUBLIC KEY-----"
        return [
            marker + part.split("-----END PUBLIC KEY-----")[0] + "-----END PUBLIC KEY-----\n"
            for part in text.split(marker)[1:]
        ]

    def service_database_url(self, env: dict[str, str] | None = None) -> str:
        import os

        env = env if env is not None else dict(os.environ)
        own = env.get(f"MTM_{self.service.upper()}_DATABASE_URL")
        if own:
            return own
        name = self.database_name or f"mtm_{self.service}"
        return with_database(self.database_url, name)


def nats_servers(url: str) -> list[str]:
    """Every seed of `MTM_NATS_URL` (a cluster's are comma-separated), as the NATS client takes them."""
    return [part.strip() for part in url.split(",") if part.strip()]


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
