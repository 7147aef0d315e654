"""Everything the notify service consumes, in one table (its delivery worker is wired in bootstrap)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mtm.contracts import ListNotifications, NotificationRequested, ReferralEscalated, ReferralRequested
from mtm.contracts.subjects import LIST_NOTIFICATIONS
from mtm.notify import application
from mtm.notify.adapters import notifications
from mtm.platform.service import Query, ServiceHandlers, on_event


def handlers(channels_for: application.ChannelsFor, *, wake_worker: Callable[[], None]) -> ServiceHandlers:
    return ServiceHandlers(
        projection=notifications.NOTIFICATIONS,
        reactions=(
            on_event(
                ReferralRequested,
                partial(application.request_notifications, channels_for=channels_for),
                durable="notify-referral-requested",
                emits=(NotificationRequested,),
                keeps_input=True,
                after_commit=wake_worker,
            ),
            on_event(
                ReferralEscalated,
                partial(application.request_reminders, channels_for=channels_for),
                durable="notify-referral-escalated",
                emits=(NotificationRequested,),
                after_commit=wake_worker,
            ),
        ),
        queries=(
            Query(LIST_NOTIFICATIONS, ListNotifications, ("pharmacist", "admin"), notifications.list_notifications),
        ),
    )
