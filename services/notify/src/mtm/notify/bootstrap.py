"""The one place that wires the notify service: settings, channels, broker, pool, handlers, delivery worker."""

from __future__ import annotations

import asyncio
from importlib.resources import files

import httpx
from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.notify.adapters.channels import NatsInboxChannel, WebhookChannel
from mtm.notify.delivery_worker import DeliveryWorker
from mtm.notify.domain.delivery import RetryPolicy
from mtm.notify.handlers import on_referral_requested
from mtm.notify.settings import NotifySettings
from mtm.platform.logging import get_logger
from mtm.platform.runtime import Runtime, ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.streams import PHYSICIAN_INBOX

log = get_logger(__name__)


def create_app(settings: NotifySettings | None = None) -> FastStream:
    settings = settings or NotifySettings()
    secret = settings.notify_webhook_secret
    webhooks_enabled = secret is not None
    wake = asyncio.Event()

    async def deliver_notifications(runtime: Runtime) -> None:
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
        migrations=files("mtm.notify") / "migrations",
        owned_streams=(PHYSICIAN_INBOX,),
        consumed_streams=(PATIENT_EVENTS_STREAM,),
        consumers=lambda _: [
            on_referral_requested.consumer(
                webhook_template=settings.notify_webhook_url, webhooks_enabled=webhooks_enabled, wake=wake
            )
        ],
        background_jobs=(deliver_notifications,),
    )
    return create_service_app(definition, settings)
