"""Attempts due notifications and records each attempt's outcome as an event (projection and outbox at once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import asyncpg

from mtm.contracts import ReferralRequested
from mtm.contracts.subjects import ANSWER_REFERRAL
from mtm.notify.adapters import notifications
from mtm.notify.adapters.channels import EmailChannel, NatsInboxChannel, WebhookChannel
from mtm.notify.adapters.directory import Directory
from mtm.notify.application import record_attempt
from mtm.notify.domain.delivery import AttemptResult, Contact, RetryPolicy, referral_email, referral_message
from mtm.platform import metrics, tracing
from mtm.platform.faults import until_set
from mtm.platform.logging import get_logger
from mtm.platform.projection import UnitOfWork

log = get_logger(__name__)
LEASE_BATCH = 50
# On shutdown, a round in hand (attempts sent, outcomes not yet recorded) gets this long to record them, so a
# restart does not send again what was just delivered.
FINISH_ROUND_S = 20.0


@dataclass(frozen=True)
class EmailSetup:
    channel: EmailChannel
    sender: str
    web_url: str

    def link(self, referral_id: str) -> str:
        return f"{self.web_url.rstrip('/')}/referrals/{referral_id}"


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        webhook: WebhookChannel | None,
        inbox: NatsInboxChannel,
        directory: Directory,
        webhook_template: str | None,
        policy: RetryPolicy,
        lease_s: float,
        poll_s: float,
        wake: asyncio.Event,
        stopping: asyncio.Event,
        email: EmailSetup | None = None,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._webhook = webhook
        self._inbox = inbox
        self._directory = directory
        self._email = email
        self._template = webhook_template
        self._policy = policy
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._wake = wake
        self._stopping = stopping
        self._on_recorded = on_recorded

    async def run(self) -> None:
        """Deliver until stopped: it ends when `stopping` is set, not only when cancelled, since a cancellation can be
        lost on its way in (on Python 3.11, a notification's wake-up landing with the stop's cancellation is enough)."""
        while not self._stopping.is_set():
            # Cleared before looking, so a notification committed during this round wakes the next one.
            self._wake.clear()
            round_ = asyncio.ensure_future(self.deliver_due())
            try:
                worked = await asyncio.shield(round_)
            except asyncio.CancelledError:
                # Stopping: let the round in hand record what it sent (bounded), then stop.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(round_, timeout=FINISH_ROUND_S)
                raise
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("delivery round failed; will retry", error_type=type(exc).__name__)
                worked = 0
            if worked:
                continue
            await until_set(self._poll_s, self._wake, self._stopping)

    async def deliver_due(self) -> int:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            leased = await notifications.lease_due(conn, LEASE_BATCH, self._lease_s, now)
        if not leased:
            return 0
        async with self._pool.acquire() as conn:
            contacts = await self._directory.contacts(conn, [n.attempted.request.recipient_id for n in leased])
        traced = await asyncio.gather(*(self._traced_attempt(n, contacts) for n in leased))
        finished = datetime.now(UTC)
        outcomes = [
            record_attempt(n.attempted, result, finished, self._policy)
            for n, (result, _) in zip(leased, traced, strict=True)
        ]
        # Each outcome is published as a child of its attempt's span (its flow's trace).
        headers = (
            {o.id: tracing.headers_for(span) for o, (_, span) in zip(outcomes, traced, strict=True)}
            if tracing.enabled()
            else None
        )
        async with self._pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, notifications.NOTIFICATIONS)
            await uow.begin()
            await uow.record(outcomes, headers)
            await notifications.release(conn, [n.attempted.request.notification_id for n in leased])
        attempts = metrics.current().counter(
            "mtm_notification_attempts", "Delivery attempts, by channel and what they led to.", ("channel", "outcome")
        )
        for n, outcome in zip(leased, outcomes, strict=True):
            attempts.labels(n.attempted.request.channel, outcome.EVENT_NAME.removeprefix("notification_")).inc()
            log.info(
                "notification attempt",
                notification_id=str(n.attempted.request.notification_id),
                referral_id=str(n.attempted.request.referral_id),
                channel=n.attempted.request.channel,
                attempt=n.attempted.attempt,
                outcome=outcome.EVENT_NAME,
            )
        self._on_recorded()
        return len(leased)

    def _webhook_url(self, recipient: str, contact: Contact | None) -> str | None:
        if contact is not None and contact.webhook_url:
            return contact.webhook_url
        if self._template:
            return self._template.replace("{recipient_id}", quote(recipient, safe=""))
        return None

    async def _traced_attempt(
        self, leased: notifications.Leased, contacts: dict[str, Contact]
    ) -> tuple[AttemptResult, object]:
        """One attempt, as a span of its flow's trace (the referral's discharge), when tracing is on."""
        attempted = leased.attempted
        span = (
            tracing.start(
                f"notification {attempted.request.channel}",
                kind=tracing.CLIENT,
                flow=attempted.correlation_id,
                attributes={
                    "mtm.notification_id": str(attempted.request.notification_id),
                    "mtm.channel": attempted.request.channel,
                    "mtm.attempt": attempted.attempt,
                    "mtm.purpose": attempted.request.purpose,
                    "mtm.correlation_id": str(attempted.correlation_id),
                },
            )
            if tracing.enabled()
            else None
        )
        with tracing.active(span):
            result = await self._attempt(leased, contacts)
            if span is not None:
                span.set_attribute("mtm.delivered", result.ok)
                if result.status_code is not None:
                    span.set_attribute("http.response.status_code", result.status_code)
        return result, tracing.context_of(span)

    async def _attempt(self, leased: notifications.Leased, contacts: dict[str, Contact]) -> AttemptResult:
        request = leased.attempted.request
        contact = contacts.get(request.recipient_id)
        notification = str(request.notification_id)
        if request.channel == "email":
            return await self._send_email(leased, contact)
        referral = ReferralRequested.model_validate_json(leased.referral_event)
        payload = referral_message(referral, request.notification_id, ANSWER_REFERRAL, request.purpose)
        if request.channel == "nats":
            return await self._inbox.deliver(request.recipient_id, payload, notification)
        url = self._webhook_url(request.recipient_id, contact)
        if request.channel == "webhook" and self._webhook is not None and url is not None:
            return await self._webhook.deliver(url, payload, notification)
        return AttemptResult(ok=False, retryable=False, detail=f"no {request.channel} endpoint for recipient")

    async def _send_email(self, leased: notifications.Leased, contact: Contact | None) -> AttemptResult:
        request = leased.attempted.request
        if self._email is None:
            return AttemptResult(ok=False, retryable=False, detail="email is not set up (MTM_NOTIFY_SMTP_HOST)")
        if contact is None or not contact.email:
            return AttemptResult(ok=False, retryable=False, detail="no email endpoint for recipient")
        message = referral_email(
            notification=request.notification_id,
            link=self._email.link(str(request.referral_id)),
            purpose=request.purpose,
            sender=self._email.sender,
            recipient=contact.email,
        )
        return await self._email.channel.deliver(message)
