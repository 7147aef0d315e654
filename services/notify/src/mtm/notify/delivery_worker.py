"""Attempts due notifications and records each attempt's outcome as an event (projection and outbox at once)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

import asyncpg

from mtm.contracts import ReferralRequested
from mtm.contracts.subjects import ANSWER_REFERRAL
from mtm.notify.adapters import notifications
from mtm.notify.adapters.channels import NatsInboxChannel, WebhookChannel
from mtm.notify.application import record_attempt
from mtm.notify.domain.delivery import AttemptResult, RetryPolicy, referral_message
from mtm.platform.logging import get_logger
from mtm.platform.projection import UnitOfWork

log = get_logger(__name__)
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
            leased = await notifications.lease_due(conn, LEASE_BATCH, self._lease_s, now)
        if not leased:
            return 0
        urls = await self._webhook_urls([n.attempted.request.recipient_id for n in leased])
        results = await asyncio.gather(*(self._attempt(n, urls) for n in leased))
        finished = datetime.now(UTC)
        outcomes = [
            record_attempt(n.attempted, result, finished, self._policy)
            for n, result in zip(leased, results, strict=True)
        ]
        async with self._pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, notifications.NOTIFICATIONS)
            await uow.begin()
            await uow.record(outcomes)
            await notifications.release(conn, [n.attempted.request.notification_id for n in leased])
        for n, outcome in zip(leased, outcomes, strict=True):
            log.info(
                "notification attempt",
                notification_id=str(n.attempted.request.notification_id),
                channel=n.attempted.request.channel,
                attempt=n.attempted.attempt,
                outcome=outcome.EVENT_NAME,
            )
        self._on_recorded()
        return len(leased)

    async def _webhook_urls(self, recipients: list[str]) -> dict[str, str]:
        if not recipients:
            return {}
        async with self._pool.acquire() as conn:
            known = await notifications.webhook_urls(conn, recipients)
        if self._template:
            for recipient in recipients:
                known.setdefault(recipient, self._template.replace("{recipient_id}", quote(recipient, safe="")))
        return known

    async def _attempt(self, leased: notifications.Leased, urls: dict[str, str]) -> AttemptResult:
        request = leased.attempted.request
        referral = ReferralRequested.model_validate_json(leased.referral_event)
        payload = referral_message(referral, request.notification_id, ANSWER_REFERRAL)
        notification = str(request.notification_id)
        if request.channel == "nats":
            return await self._inbox.deliver(request.recipient_id, payload, notification)
        if request.channel == "webhook" and self._webhook is not None and request.recipient_id in urls:
            return await self._webhook.deliver(urls[request.recipient_id], payload, notification)
        return AttemptResult(ok=False, retryable=False, detail=f"no {request.channel} endpoint for recipient")
