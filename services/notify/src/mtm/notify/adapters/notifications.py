"""Notifications in Postgres: how events change them, which are due, and who is attempting which."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files

import asyncpg

from mtm.contracts import (
    CommandReply,
    EventEnvelope,
    ListNotifications,
    NotificationDelivered,
    NotificationFailed,
    NotificationRequested,
    NotificationRetryScheduled,
    ReferralRequested,
)
from mtm.contracts.events import NotificationRequest
from mtm.contracts.identity import Actor
from mtm.notify.domain.delivery import Attempted
from mtm.platform.projection import Projection, Tx, runs

INSERT_REFERRAL_REQUESTS = """
INSERT INTO referral_requests (referral_id, patient_id, event) SELECT * FROM unnest($1::uuid[], $2::text[], $3::json[])
ON CONFLICT (referral_id) DO NOTHING
"""
ERASE = (
    "DELETE FROM notification_attempts WHERE notification_id IN"
    " (SELECT notification_id FROM notifications WHERE patient_id = $1)",
    "DELETE FROM notifications WHERE patient_id = $1",
    "DELETE FROM referral_requests WHERE patient_id = $1",
)
INSERT_NOTIFICATIONS = """
INSERT INTO notifications
    (notification_id, referral_id, patient_id, correlation_id, cause_event_id, recipient_id, channel, status,
     next_attempt_at, requested_at, purpose, escalation)
SELECT n.notification_id, n.referral_id, n.patient_id, n.correlation_id, n.cause_event_id, n.recipient_id,
       n.channel, 'pending', n.requested_at, n.requested_at, n.purpose, n.escalation
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::timestamptz[],
            $9::text[], $10::int[])
    AS n(notification_id, referral_id, patient_id, correlation_id, cause_event_id, recipient_id, channel,
         requested_at, purpose, escalation)
ON CONFLICT (notification_id) DO NOTHING
"""
SCHEDULE_RETRY = """
UPDATE notifications SET attempts = $2, next_attempt_at = $3, last_error = $4 WHERE notification_id = $1
"""
FINISH = """
UPDATE notifications SET status = $2, attempts = $3, finished_at = $4, last_error = $5 WHERE notification_id = $1
"""
INSERT_ATTEMPT = """
INSERT INTO notification_attempts (notification_id, attempt, started_at, finished_at, outcome, status_code, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT DO NOTHING
"""
# A worker leases due notifications before attempting them, so two workers never attempt the same one; a lease
# left by a crashed worker expires and the notification is attempted again.
LEASE_DUE = """
WITH due AS (
    SELECT n.notification_id FROM notifications n
    LEFT JOIN public.notification_leases l USING (notification_id)
    WHERE n.status = 'pending' AND n.next_attempt_at <= $2 AND (l.leased_until IS NULL OR l.leased_until < $2)
    ORDER BY n.next_attempt_at
    LIMIT $1
    FOR UPDATE OF n SKIP LOCKED
)
INSERT INTO public.notification_leases (notification_id, leased_until)
SELECT notification_id, $2 + make_interval(secs => $3) FROM due
ON CONFLICT (notification_id) DO UPDATE SET leased_until = EXCLUDED.leased_until
RETURNING notification_id
"""
LEASED = """
SELECT n.notification_id, n.referral_id, n.patient_id, n.correlation_id, n.attempts, n.cause_event_id,
       n.recipient_id, n.channel, n.purpose, n.escalation, r.event AS referral_event
FROM notifications n JOIN referral_requests r USING (referral_id)
WHERE n.notification_id = ANY($1::uuid[])
"""
RELEASE = "DELETE FROM public.notification_leases WHERE notification_id = ANY($1::uuid[])"
SELECT_REQUESTED = "SELECT cause_event_id FROM notifications WHERE notification_id = $1"


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    for run in runs(events):
        first = run[0]
        if isinstance(first, ReferralRequested):
            await tx.conn.execute(
                INSERT_REFERRAL_REQUESTS,
                [e.data.referral_id for e in run],
                [e.patient_id for e in run],
                [tx.body(e) for e in run],
            )
        elif isinstance(first, NotificationRequested):
            await _insert_notifications(tx, run)  # type: ignore[arg-type]
        elif isinstance(first, NotificationRetryScheduled):
            for e in run:
                a = e.data
                await tx.conn.execute(SCHEDULE_RETRY, a.notification_id, a.attempt, a.next_attempt_at, a.detail)
                await tx.conn.execute(
                    INSERT_ATTEMPT, a.notification_id, a.attempt, a.started_at, e.time, "retry", a.status_code, a.detail
                )
        elif isinstance(first, NotificationDelivered | NotificationFailed):
            for e in run:
                o = e.data
                status = "delivered" if isinstance(e, NotificationDelivered) else "failed"
                await tx.conn.execute(FINISH, o.notification_id, status, o.attempts, e.time, o.reason)
                await tx.conn.execute(
                    INSERT_ATTEMPT, o.notification_id, o.attempts, o.started_at, e.time, status, o.status_code, o.detail
                )


async def _insert_notifications(tx: Tx, requested: Sequence[NotificationRequested]) -> None:
    await tx.conn.execute(
        INSERT_NOTIFICATIONS,
        [e.data.notification_id for e in requested],
        [e.data.referral_id for e in requested],
        [e.patient_id for e in requested],
        [e.correlation_id for e in requested],
        [e.id for e in requested],
        [e.data.recipient_id for e in requested],
        [e.data.channel for e in requested],
        [e.time for e in requested],
        [e.data.purpose for e in requested],
        [e.data.escalation for e in requested],
    )


NOTIFICATIONS = Projection(
    migrations=files("mtm.notify") / "migrations" / "projection",
    tables=("referral_requests", "notifications", "notification_attempts"),
    handles=(
        ReferralRequested,
        NotificationRequested,
        NotificationRetryScheduled,
        NotificationDelivered,
        NotificationFailed,
    ),
    apply=apply,
    erase=ERASE,
)


@dataclass(frozen=True)
class Leased:
    """A due notification this worker holds the lease on: its next attempt, and the referral to send."""

    attempted: Attempted
    referral_event: str


async def lease_due(conn: asyncpg.Connection, limit: int, lease_s: float, now: datetime) -> list[Leased]:
    ids = [row["notification_id"] for row in await conn.fetch(LEASE_DUE, limit, now, lease_s)]
    if not ids:
        return []
    rows = await conn.fetch(LEASED, ids)
    return [
        Leased(
            Attempted(
                request=NotificationRequest(
                    notification_id=r["notification_id"],
                    referral_id=r["referral_id"],
                    recipient_id=r["recipient_id"],
                    channel=r["channel"],
                    purpose=r["purpose"],
                    escalation=r["escalation"],
                ),
                patient_id=r["patient_id"],
                correlation_id=r["correlation_id"],
                requested_event_id=r["cause_event_id"],
                attempt=r["attempts"] + 1,
                started_at=now,
            ),
            referral_event=r["referral_event"],
        )
        for r in rows
    ]


async def release(conn: asyncpg.Connection, notification_ids: Sequence[object]) -> None:
    await conn.execute(RELEASE, list(notification_ids))


LIST_NOTIFICATIONS = """
SELECT notification_id, referral_id, patient_id, recipient_id, channel, status, attempts, last_error, requested_at,
       finished_at
FROM notifications
WHERE ($1::text IS NULL OR patient_id = $1)
ORDER BY requested_at, notification_id
OFFSET $2 LIMIT $3
"""


async def list_notifications(conn: asyncpg.Connection, query: ListNotifications, actor: Actor) -> CommandReply:
    """Deliveries of referrals (FHIR Communication): status, attempts, and the last error (never PHI)."""
    rows = await conn.fetch(LIST_NOTIFICATIONS, query.patient_id, query.offset, query.limit)
    found = [
        {
            "notification_id": str(r["notification_id"]),
            "referral_id": str(r["referral_id"]),
            "patient": f"Patient/{r['patient_id']}",
            "recipient_id": r["recipient_id"],
            "channel": r["channel"],
            "status": r["status"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "requested_at": r["requested_at"].isoformat(),
            "finished_at": r["finished_at"].isoformat() if r["finished_at"] else None,
        }
        for r in rows
    ]
    return CommandReply(outcome="accepted", message=f"{len(found)} notifications", data=found)
