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
from mtm.contracts.events import (
    NotificationAttempt,
    NotificationChannel,
    NotificationOutcome,
    NotificationPurpose,
    NotificationRequest,
)
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


def _requests(
    cause: ReferralRequested | ReferralEscalated,
    channels: Sequence[NotificationChannel],
    purpose: NotificationPurpose,
    escalation: int,
) -> list[NotificationRequested]:
    """One notification per channel for a referral (or a reminder of it), each id derived from what it is."""
    referral_id, physician_id = cause.data.referral_id, cause.data.physician_id
    return [
        cause.caused(
            NotificationRequested,
            source=SOURCE,
            data=NotificationRequest(
                notification_id=(nid := notification_id(referral_id, channel, escalation)),
                referral_id=referral_id,
                recipient_id=physician_id,
                channel=channel,
                purpose=purpose,
                escalation=escalation,
            ),
            event_id=derived_event_id("notification-requested", nid),
        )
        for channel in channels
    ]


async def request_notifications(event: ReferralRequested, *, channels_for: ChannelsFor) -> list[NotificationRequested]:
    """One notification per channel the physician can be reached on; each is delivered until it succeeds or fails."""
    return _requests(event, await channels_for(event.data.physician_id), "referral", 0)


async def request_reminders(event: ReferralEscalated, *, channels_for: ChannelsFor) -> list[NotificationRequested]:
    """An unanswered referral escalated: remind the physician on the same kinds of channel, once per escalation."""
    return _requests(event, await channels_for(event.data.physician_id), "reminder", event.data.escalation)


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
