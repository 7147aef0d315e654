"""Settings of the web app (prefix `MTM_`); the signing key, the session secret and the NATS password have no
default."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from mtm.platform.settings import DEFAULT_DATABASE_URL, NatsSettings, with_database


class WebSettings(NatsSettings):
    """The web app connects to NATS as its own user (`MTM_NATS_USER=web`, `MTM_NATS_PASSWORD`, TLS as every client)
    and to its accounts database as its own role (`MTM_WEB_DATABASE_URL`)."""

    model_config = SettingsConfigDict(env_prefix="MTM_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    web_database_url: str | None = Field(
        default=None, description="Own database (as its own role); else `mtm_web` on MTM_DATABASE_URL's server."
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8000, ge=0, le=65535)
    web_public_url: str | None = Field(
        default=None, description="The address people open (behind a proxy: its https URL); OIDC redirects to it."
    )
    web_signing_key: SecretStr | None = Field(
        default=None, description="Ed25519 private key (PEM) that signs actor tokens; services hold its public key."
    )
    web_signing_key_file: str | None = None
    web_session_secret: SecretStr | None = Field(default=None, description="Signs the session and CSRF cookies.")
    web_session_secret_file: str | None = None
    web_session_ttl_s: float = Field(default=8 * 3600, gt=0, description="A session ends this long after sign-in.")
    web_token_ttl_s: float = Field(default=300, gt=0, description="Lifetime of the token sent with each request.")
    web_cli_token_ttl_s: float = Field(default=8 * 3600, gt=0, description="Lifetime of a token `mtm login` gets.")
    web_login_max_failures: int = Field(default=5, ge=1, description="Failed sign-ins per account per window.")
    web_login_max_failures_per_ip: int = Field(default=20, ge=1)
    web_login_window_s: float = Field(default=900, gt=0)
    web_secure_cookies: bool | None = Field(default=None, description="Default: when the public URL is https.")
    web_request_timeout_s: float = Field(default=10.0, gt=0)
    web_oidc_issuer: str | None = Field(default=None, description="OpenID provider (issuer URL) for hospital SSO.")
    web_oidc_client_id: str | None = None
    web_oidc_client_secret: SecretStr | None = None
    web_oidc_username_claim: str = Field(
        default="preferred_username", description="The ID token claim naming the mtm account."
    )
    web_oidc_label: str = "hospital single sign-on"
    log_level: str = "INFO"
    log_format: str = "json"
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /healthz, /readyz and /metrics on this port, apart from the pages (0: any free port).",
    )
    http_host: str = Field(default="127.0.0.1", description="Address the health and metrics server listens on.")

    @property
    def public_url(self) -> str:
        return (self.web_public_url or f"http://{self.web_host}:{self.web_port}").rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        if self.web_secure_cookies is not None:
            return self.web_secure_cookies
        return self.public_url.startswith("https://")

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.web_oidc_issuer and self.web_oidc_client_id)

    def accounts_database_url(self) -> str:
        return self.web_database_url or with_database(self.database_url, "mtm_web")

    def signing_key(self) -> str:
        return _secret(self.web_signing_key, self.web_signing_key_file, "MTM_WEB_SIGNING_KEY") + "\n"

    def session_secret(self) -> str:
        return _secret(self.web_session_secret, self.web_session_secret_file, "MTM_WEB_SESSION_SECRET")

    @property
    def session_ttl(self) -> timedelta:
        return timedelta(seconds=self.web_session_ttl_s)


def _secret(value: SecretStr | None, file: str | None, name: str) -> str:
    if value is not None:
        return value.get_secret_value().strip()
    if file:
        return Path(file).read_text(encoding="utf-8").strip()
    raise ValueError(f"{name} (or {name}_FILE) is not set")
