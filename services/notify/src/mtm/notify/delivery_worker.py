"""Delivers due notifications, records every attempt and publishes the outcome through the outbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import NotificationDelivered, NotificationFailed
from mtm.contracts.events import NotificationOutcome
from mtm.notify.adapters.channels import NatsInboxChannel, WebhookChannel
from mtm.notify.adapters.notifications import NotificationRepository, PendingNotification
from mtm.notify.domain.delivery import (
    AttemptResult,
    RetryPolicy,
    derived_event_id,
    next_attempt_at,
    next_step,
)
from mtm.platform.logging import get_logger
from mtm.platform.outbox import enqueue_events

log = get_logger(__name__)
SOURCE = "mtm/notify"
LEASE_BATCH = 50


class DeliveryWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        webhook: WebhookChannel | None,
        inbox: NatsInboxChannel,
        webhook_template: str | None,
        policy: RetryPolicy,
        lease_s: float,
        poll_s: float,
        wake: asyncio.Event,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._webhook = webhook
        self._inbox = inbox
        self._template = webhook_template
        self._policy = policy
        self._lease_s = lease_s
        self._poll_s = poll_s
        self._wake = wake
        self._on_recorded = on_recorded

    async def run(self) -> None:
        while True:
            # Cleared before looking, so a notification committed during this round wakes the next one.
            self._wake.clear()
            try:
                worked = await self.deliver_due()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("delivery round failed; will retry", error_type=type(exc).__name__)
                worked = 0
            if worked:
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)

    async def deliver_due(self) -> int:
        now = datetime.now(UTC)
        async with self._pool.acquire() as conn, conn.transaction():
            leased = await NotificationRepository(conn).lease_due(LEASE_BATCH, self._lease_s, now)
        if not leased:
            return 0
        urls = await self._webhook_urls(leased)
        results = await asyncio.gather(*(self._attempt(n, urls) for n in leased))
        async with self._pool.acquire() as conn, conn.transaction():
            repo = NotificationRepository(conn)
            outcomes = []
            finished = datetime.now(UTC)
            for n, result in zip(leased, results, strict=True):
                outcomes.extend(await self._record(repo, n, result, finished))
            await enqueue_events(conn, outcomes)
        self._on_recorded()
        return len(leased)

    async def _webhook_urls(self, leased: list[PendingNotification]) -> dict[str, str]:
        recipients = [n.recipient_id for n in leased if n.channel == "webhook"]
        if not recipients:
            return {}
        async with self._pool.acquire() as conn:
            known = await NotificationRepository(conn).webhook_urls(recipients)
        if self._template:
            for recipient in recipients:
                known.setdefault(recipient, self._template.replace("{recipient_id}", recipient))
        return known

    async def _attempt(self, n: PendingNotification, urls: dict[str, str]) -> AttemptResult:
        if n.channel == "nats":
            return await self._inbox.deliver(n.recipient_id, n.payload, str(n.notification_id))
        if n.channel == "webhook" and self._webhook is not None and n.recipient_id in urls:
            return await self._webhook.deliver(urls[n.recipient_id], n.payload, str(n.notification_id))
        return AttemptResult(ok=False, retryable=False, detail=f"no {n.channel} endpoint for recipient")

    async def _record(
        self, repo: NotificationRepository, n: PendingNotification, result: AttemptResult, now: datetime
    ) -> list[NotificationDelivered | NotificationFailed]:
        step = next_step(result, n.attempt, self._policy)
        await repo.finish_attempt(n, now, step, result.status_code, result.detail)
        log.info(
            "notification attempt",
            notification_id=str(n.notification_id),
            channel=n.channel,
            attempt=n.attempt,
            outcome=step,
            status_code=result.status_code,
        )
        outcome = NotificationOutcome(
            notification_id=n.notification_id,
            referral_id=n.referral_id,
            recipient_id=n.recipient_id,
            channel=n.channel,  # type: ignore[arg-type]
            attempts=n.attempt,
            reason=None if result.ok else result.detail,
        )
        if step == "delivered":
            await repo.mark_delivered(n, now)
            return [self._event(NotificationDelivered, n, outcome, now)]
        if step == "failed":
            await repo.mark_failed(n, now, result.detail)
            return [self._event(NotificationFailed, n, outcome, now)]
        await repo.schedule_retry(n, next_attempt_at(now, n.attempt, self._policy), result.detail)
        return []

    @staticmethod
    def _event(
        cls: type[NotificationDelivered] | type[NotificationFailed],
        n: PendingNotification,
        outcome: NotificationOutcome,
        now: datetime,
    ) -> NotificationDelivered | NotificationFailed:
        return cls.create(
            source=SOURCE,
            patient_id=n.patient_id,
            data=outcome,
            correlation_id=n.correlation_id,
            causation_id=n.cause_event_id,
            event_id=derived_event_id(cls.EVENT_NAME, n.notification_id),
            time=now,
        )
