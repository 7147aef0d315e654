"""Settings of the notify service; secrets have no default and never appear in logs."""

from __future__ import annotations

from pydantic import Field, SecretStr

from mtm.notify.adapters.channels import SmtpServer
from mtm.platform.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    service: str = "notify"
    notify_webhook_url: str | None = Field(
        default=None,
        description="Webhook for physicians without one in the directory; `{recipient_id}` is filled in.",
    )
    notify_webhook_secret: SecretStr | None = Field(
        default=None, description="Webhook signing secret (Standard Webhooks; see mtm.contracts.webhooks)."
    )
    notify_directory_file: str | None = Field(
        default=None, description="The practitioner directory as JSON: id → email, webhook URL, channels."
    )
    notify_web_url: str | None = Field(
        default=None, description="The web app's address; emails link to `<web url>/referrals/<referral id>`."
    )
    notify_smtp_host: str | None = Field(default=None, description="SMTP submission server; no email without it.")
    notify_smtp_port: int = Field(default=587, ge=1, le=65535)
    notify_smtp_username: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_smtp_starttls: bool = Field(default=True, description="Upgrade with STARTTLS before logging in.")
    notify_smtp_ca_file: str | None = Field(default=None, description="CA bundle for the server's certificate.")
    notify_smtp_from: str = Field(default="mtm <mtm-noreply@localhost>", description="The emails' From address.")
    notify_smtp_timeout_s: float = Field(default=10.0, gt=0)
    notify_max_attempts: int = Field(default=6, ge=1)
    notify_backoff_base_s: float = Field(default=1.0, gt=0)
    notify_backoff_max_s: float = Field(default=300.0, gt=0)
    notify_lease_s: float = Field(default=30.0, gt=0, description="An attempt not finished by then is retried.")
    notify_http_timeout_s: float = Field(default=10.0, gt=0)
    notify_poll_s: float = Field(default=0.5, gt=0)

    @property
    def email_enabled(self) -> bool:
        return bool(self.notify_smtp_host and self.notify_web_url)

    def smtp_server(self) -> SmtpServer | None:
        if not self.email_enabled:
            return None
        password = self.notify_smtp_password.get_secret_value() if self.notify_smtp_password else None
        return SmtpServer(
            host=self.notify_smtp_host or "",
            port=self.notify_smtp_port,
            username=self.notify_smtp_username,
            password=password,
            starttls=self.notify_smtp_starttls,
            ca_file=self.notify_smtp_ca_file,
            timeout_s=self.notify_smtp_timeout_s,
        )
