"""ReferralRequested → one pending notification per channel for the physician; the worker delivers them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from mtm.contracts import ReferralRequested
from mtm.contracts.subjects import ANSWER_REFERRAL
from mtm.notify.adapters.notifications import NotificationRepository, PendingNotification
from mtm.notify.domain.delivery import notification_id, referral_message
from mtm.platform.consumer import Accepted, BatchConsumer, patient_event_consumer

DURABLE = "notify-referral-requested"


def consumer(
    *, webhook_template: str | None, webhooks_enabled: bool, wake: asyncio.Event
) -> BatchConsumer[ReferralRequested]:
    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[ReferralRequested]]) -> None:
        repo = NotificationRepository(conn)
        events = [item.value for item in batch]
        known = await repo.webhook_urls([e.data.physician_id for e in events]) if webhooks_enabled else {}
        pending = []
        for event in events:
            channels = ["nats"]
            if webhooks_enabled and (event.data.physician_id in known or webhook_template):
                channels.insert(0, "webhook")
            for channel in channels:
                nid = notification_id(event.data.referral_id, channel)  # type: ignore[arg-type]
                pending.append(
                    PendingNotification(
                        notification_id=nid,
                        referral_id=event.data.referral_id,
                        patient_id=event.patient_id,
                        correlation_id=event.correlation_id,
                        cause_event_id=event.id,
                        recipient_id=event.data.physician_id,
                        channel=channel,
                        payload=referral_message(event, nid, ANSWER_REFERRAL),
                    )
                )
        await repo.add_all(pending)

    return patient_event_consumer(DURABLE, ReferralRequested, apply, after_commit=wake.set)
