"""Notify's use cases: which channels a referral goes out on, and what each delivery attempt means."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from mtm.contracts import (
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationRetryScheduled,
    ReferralEscalated,
    ReferralRequested,
)
from mtm.contracts.events import NotificationAttempt, NotificationChannel, NotificationOutcome, NotificationRequest
from mtm.notify.domain.delivery import (
    Attempted,
    AttemptResult,
    RetryPolicy,
    derived_event_id,
    next_attempt_at,
    next_step,
    notification_id,
)

SOURCE = "mtm/notify"
ChannelsFor = Callable[[str], Awaitable[Sequence[NotificationChannel]]]


async def request_notifications(event: ReferralRequested, *, channels_for: ChannelsFor) -> list[NotificationRequested]:
    """One notification per channel the physician can be reached on; each is delivered until it succeeds or fails."""
    referral = event.data
    return [
        event.caused(
            NotificationRequested,
            source=SOURCE,
            data=NotificationRequest(
                notification_id=(nid := notification_id(referral.referral_id, channel)),
                referral_id=referral.referral_id,
                recipient_id=referral.physician_id,
                channel=channel,
            ),
            event_id=derived_event_id("notification-requested", nid),
        )
        for channel in await channels_for(referral.physician_id)
    ]


async def request_reminders(event: ReferralEscalated, *, channels_for: ChannelsFor) -> list[NotificationRequested]:
    """An unanswered referral escalated: remind the physician on the same kinds of channel, once per escalation."""
    escalation = event.data
    return [
        event.caused(
            NotificationRequested,
            source=SOURCE,
            data=NotificationRequest(
                notification_id=(nid := notification_id(escalation.referral_id, channel, escalation.escalation)),
                referral_id=escalation.referral_id,
                recipient_id=escalation.physician_id,
                channel=channel,
                purpose="reminder",
                escalation=escalation.escalation,
            ),
            event_id=derived_event_id("notification-requested", nid),
        )
        for channel in await channels_for(escalation.physician_id)
    ]


def record_attempt(
    attempted: Attempted, result: AttemptResult, finished_at: datetime, policy: RetryPolicy
) -> NotificationDelivered | NotificationFailed | NotificationRetryScheduled:
    """Delivered, failed for good, or a retry scheduled with back-off: the fact to put on the log."""
    target, n = attempted.request, attempted.attempt
    step = next_step(result, n, policy)
    envelope = {
        "source": SOURCE,
        "patient_id": attempted.patient_id,
        "correlation_id": attempted.correlation_id,
        "causation_id": attempted.requested_event_id,
        "time": finished_at,
    }
    if step == "retry":
        return NotificationRetryScheduled.create(
            data=NotificationAttempt(
                notification_id=target.notification_id,
                referral_id=target.referral_id,
                recipient_id=target.recipient_id,
                channel=target.channel,
                attempt=n,
                started_at=attempted.started_at,
                status_code=result.status_code,
                detail=result.detail,
                next_attempt_at=next_attempt_at(finished_at, n, policy),
            ),
            event_id=derived_event_id(f"notification-retry:{n}", target.notification_id),
            **envelope,
        )
    cls = NotificationDelivered if step == "delivered" else NotificationFailed
    return cls.create(
        data=NotificationOutcome(
            notification_id=target.notification_id,
            referral_id=target.referral_id,
            recipient_id=target.recipient_id,
            channel=target.channel,
            attempts=n,
            reason=None if result.ok else result.detail,
            started_at=attempted.started_at,
            status_code=result.status_code,
            detail=result.detail,
        ),
        event_id=derived_event_id(cls.EVENT_NAME, target.notification_id),
        **envelope,
    )
