"""The one place that wires the notify service: settings, channels, handler table, delivery worker, runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files

import httpx
from faststream import FastStream

from mtm.contracts.events import NotificationChannel
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.notify.adapters import notifications
from mtm.notify.adapters.channels import NatsInboxChannel, WebhookChannel
from mtm.notify.delivery_worker import DeliveryWorker
from mtm.notify.domain.delivery import RetryPolicy
from mtm.notify.handlers import handlers
from mtm.notify.settings import NotifySettings
from mtm.platform.logging import get_logger
from mtm.platform.runtime import ServiceDefinition, ServiceRuntime
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.streams import PHYSICIAN_INBOX

log = get_logger(__name__)


def create_app(settings: NotifySettings | None = None) -> FastStream:
    settings = settings or NotifySettings()
    secret = settings.notify_webhook_secret
    webhooks_enabled = secret is not None
    wake = asyncio.Event()
    runtime_ref: list[ServiceRuntime] = []

    async def channels_for(physician_id: str) -> Sequence[NotificationChannel]:
        """The physician's NATS inbox always; a signed webhook when it is configured for them."""
        if not webhooks_enabled:
            return ("nats",)
        if settings.notify_webhook_url:
            return ("webhook", "nats")
        async with runtime_ref[0].db.acquire() as conn:
            known = await notifications.webhook_urls(conn, [physician_id])
        return ("webhook", "nats") if physician_id in known else ("nats",)

    async def deliver_notifications(runtime: ServiceRuntime) -> None:
        if not webhooks_enabled:
            log.warning("webhook channel disabled: MTM_NOTIFY_WEBHOOK_SECRET is not set")
        async with httpx.AsyncClient(timeout=settings.notify_http_timeout_s) as client:
            worker = DeliveryWorker(
                runtime.db,
                webhook=WebhookChannel(client, secret.get_secret_value().encode()) if secret else None,
                inbox=NatsInboxChannel(runtime.jetstream),
                webhook_template=settings.notify_webhook_url,
                policy=RetryPolicy(
                    max_attempts=settings.notify_max_attempts,
                    base_delay_s=settings.notify_backoff_base_s,
                    max_delay_s=settings.notify_backoff_max_s,
                ),
                lease_s=settings.notify_lease_s,
                poll_s=settings.notify_poll_s,
                wake=wake,
                on_recorded=runtime.wake_relay,
            )
            await worker.run()

    definition = ServiceDefinition(
        name="notify",
        handlers=handlers(channels_for, wake_worker=wake.set),
        migrations=files("mtm.notify") / "migrations" / "operational",
        owned_streams=(PHYSICIAN_INBOX,),
        consumed_streams=(PATIENT_EVENTS_STREAM,),
        background_jobs=(deliver_notifications,),
    )
    app = create_service_app(definition, settings)
    runtime_ref.append(app.runtime)  # type: ignore[attr-defined]
    return app
