"""Settings of the notify service; the webhook secret has no default and never appears in logs."""

from __future__ import annotations

from pydantic import Field, SecretStr

from mtm.platform.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    service: str = "notify"
    notify_webhook_url: str | None = Field(
        default=None,
        description="Webhook for physicians without an entry in recipient_endpoints; `{recipient_id}` is filled in.",
    )
    notify_webhook_secret: SecretStr | None = Field(
        default=None, description="Webhook signing secret (Standard Webhooks; see mtm.contracts.webhooks)."
    )
    notify_max_attempts: int = Field(default=6, ge=1)
    notify_backoff_base_s: float = Field(default=1.0, gt=0)
    notify_backoff_max_s: float = Field(default=300.0, gt=0)
    notify_lease_s: float = Field(default=30.0, gt=0, description="An attempt not finished by then is retried.")
    notify_http_timeout_s: float = Field(default=10.0, gt=0)
    notify_poll_s: float = Field(default=0.5, gt=0)
