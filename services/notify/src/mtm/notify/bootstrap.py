"""The one place that wires the notify service: settings, channels, handler table, delivery worker, runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files

import httpx
from faststream import FastStream

from mtm.contracts import NotificationDelivered, NotificationFailed, NotificationRetryScheduled
from mtm.contracts.events import NotificationChannel
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, PHYSICIAN_INBOX_PREFIX, PHYSICIAN_INBOX_STREAM
from mtm.notify.adapters.channels import EmailChannel, NatsInboxChannel, WebhookChannel
from mtm.notify.adapters.directory import Directory, load_directory_file
from mtm.notify.delivery_worker import DeliveryWorker, EmailSetup
from mtm.notify.domain.delivery import PhysicianNotification, RetryPolicy, channels_for
from mtm.notify.handlers import handlers
from mtm.notify.settings import NotifySettings
from mtm.platform.logging import get_logger
from mtm.platform.runtime import ServiceDefinition, ServiceRuntime
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.service import Publication
from mtm.platform.streams import PHYSICIAN_INBOX

log = get_logger(__name__)


def create_app(settings: NotifySettings | None = None) -> FastStream:
    settings = settings or NotifySettings()
    secret = settings.notify_webhook_secret
    webhooks_enabled = secret is not None
    wake = asyncio.Event()
    runtime_ref: list[ServiceRuntime] = []

    directory = Directory(load_directory_file(settings.notify_directory_file))
    smtp = settings.smtp_server()

    async def physician_channels(physician_id: str) -> Sequence[NotificationChannel]:
        """What the directory says for the physician, else: webhook and email when known, and the NATS inbox."""
        async with runtime_ref[0].db.acquire() as conn:
            contact = (await directory.contacts(conn, [physician_id])).get(physician_id)
        return channels_for(
            contact,
            webhooks=webhooks_enabled,
            webhook_for_everyone=bool(settings.notify_webhook_url),
            email=smtp is not None,
        )

    async def deliver_notifications(runtime: ServiceRuntime) -> None:
        if not webhooks_enabled:
            log.warning("webhook channel disabled: MTM_NOTIFY_WEBHOOK_SECRET is not set")
        if smtp is None:
            log.warning("email channel disabled: MTM_NOTIFY_SMTP_HOST or MTM_NOTIFY_WEB_URL is not set")
        email = (
            EmailSetup(EmailChannel(smtp), settings.notify_smtp_from, settings.notify_web_url or "")
            if smtp is not None
            else None
        )
        async with httpx.AsyncClient(timeout=settings.notify_http_timeout_s) as client:
            worker = DeliveryWorker(
                runtime.db,
                webhook=WebhookChannel(client, secret.get_secret_value().encode()) if secret else None,
                inbox=NatsInboxChannel(runtime.jetstream),
                directory=directory,
                email=email,
                webhook_template=settings.notify_webhook_url,
                policy=RetryPolicy(
                    max_attempts=settings.notify_max_attempts,
                    base_delay_s=settings.notify_backoff_base_s,
                    max_delay_s=settings.notify_backoff_max_s,
                ),
                lease_s=settings.notify_lease_s,
                poll_s=settings.notify_poll_s,
                wake=wake,
                stopping=runtime.stopping,
                on_recorded=runtime.wake_relay,
            )
            await worker.run()

    definition = ServiceDefinition(
        name="notify",
        handlers=handlers(physician_channels, wake_worker=wake.set),
        migrations=files("mtm.notify") / "migrations" / "operational",
        owned_streams=(PHYSICIAN_INBOX,),
        consumed_streams=(PATIENT_EVENTS_STREAM,),
        background_jobs=(deliver_notifications,),
        job_emits=(NotificationRetryScheduled, NotificationDelivered, NotificationFailed),
        sends=(
            Publication(
                address=f"{PHYSICIAN_INBOX_PREFIX}.{{physician}}",
                payload=PhysicianNotification,
                stream=PHYSICIAN_INBOX_STREAM,
                description="A referral (or its reminder) for the physician's own tool; the same body is posted to "
                "the physician's webhook, signed the Standard Webhooks way. Deduplicated by Nats-Msg-Id = "
                "notification_id.",
                parameters=(("physician", "The physician's practitioner id (percent-encoded where it has a dot)."),),
            ),
        ),
    )
    app = create_service_app(definition, settings)
    runtime_ref.append(app.runtime)  # type: ignore[attr-defined]
    return app
