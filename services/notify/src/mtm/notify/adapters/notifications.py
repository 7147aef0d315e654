"""Notifications and their attempts in Postgres, in domain terms."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

INSERT_NOTIFICATIONS = """
INSERT INTO notifications
    (notification_id, referral_id, patient_id, correlation_id, cause_event_id, recipient_id, channel, status, payload)
SELECT n.notification_id, n.referral_id, n.patient_id, n.correlation_id, n.cause_event_id, n.recipient_id, n.channel,
       'pending', n.payload
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::bytea[])
    AS n(notification_id, referral_id, patient_id, correlation_id, cause_event_id, recipient_id, channel, payload)
ON CONFLICT (notification_id) DO NOTHING
"""
SELECT_WEBHOOKS = "SELECT recipient_id, webhook_url FROM recipient_endpoints WHERE recipient_id = ANY($1::text[])"
UPSERT_ENDPOINT = """
INSERT INTO recipient_endpoints (recipient_id, webhook_url, email) VALUES ($1, $2, $3)
ON CONFLICT (recipient_id) DO UPDATE SET webhook_url = EXCLUDED.webhook_url, email = EXCLUDED.email
"""
# Leasing moves next_attempt_at forward first, so an attempt cut short by a crash is retried after the lease.
LEASE_DUE = """
WITH due AS (
    SELECT notification_id FROM notifications
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n
SET attempts = n.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
FROM due
WHERE n.notification_id = due.notification_id
RETURNING n.notification_id, n.referral_id, n.patient_id, n.correlation_id, n.cause_event_id, n.recipient_id,
          n.channel, n.attempts, n.payload
"""
INSERT_ATTEMPTS = """
INSERT INTO notification_attempts (notification_id, attempt, started_at)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[])
"""
FINISH_ATTEMPT = """
UPDATE notification_attempts SET finished_at = $3, outcome = $4, status_code = $5, detail = $6
WHERE notification_id = $1 AND attempt = $2
"""
MARK_DELIVERED = """
UPDATE notifications SET status = 'delivered', finished_at = $2, last_error = NULL WHERE notification_id = $1
"""
MARK_FAILED = "UPDATE notifications SET status = 'failed', finished_at = $2, last_error = $3 WHERE notification_id = $1"
SCHEDULE_RETRY = "UPDATE notifications SET next_attempt_at = $2, last_error = $3 WHERE notification_id = $1"


@dataclass(frozen=True)
class PendingNotification:
    notification_id: uuid.UUID
    referral_id: uuid.UUID
    patient_id: str
    correlation_id: uuid.UUID
    cause_event_id: uuid.UUID
    recipient_id: str
    channel: str
    payload: bytes
    attempt: int = 0


class NotificationRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_all(self, notifications: Sequence[PendingNotification]) -> None:
        if not notifications:
            return
        await self._conn.execute(
            INSERT_NOTIFICATIONS,
            [n.notification_id for n in notifications],
            [n.referral_id for n in notifications],
            [n.patient_id for n in notifications],
            [n.correlation_id for n in notifications],
            [n.cause_event_id for n in notifications],
            [n.recipient_id for n in notifications],
            [n.channel for n in notifications],
            [n.payload for n in notifications],
        )

    async def webhook_urls(self, recipient_ids: Sequence[str]) -> dict[str, str]:
        rows = await self._conn.fetch(SELECT_WEBHOOKS, list(recipient_ids))
        return {row["recipient_id"]: row["webhook_url"] for row in rows if row["webhook_url"]}

    async def set_endpoint(self, recipient_id: str, webhook_url: str | None, email: str | None = None) -> None:
        await self._conn.execute(UPSERT_ENDPOINT, recipient_id, webhook_url, email)

    async def lease_due(self, limit: int, lease_s: float, now: datetime) -> list[PendingNotification]:
        rows = await self._conn.fetch(LEASE_DUE, limit, lease_s)
        leased = [
            PendingNotification(
                notification_id=r["notification_id"],
                referral_id=r["referral_id"],
                patient_id=r["patient_id"],
                correlation_id=r["correlation_id"],
                cause_event_id=r["cause_event_id"],
                recipient_id=r["recipient_id"],
                channel=r["channel"],
                payload=bytes(r["payload"]),
                attempt=r["attempts"],
            )
            for r in rows
        ]
        if leased:
            await self._conn.execute(
                INSERT_ATTEMPTS, [n.notification_id for n in leased], [n.attempt for n in leased], [now] * len(leased)
            )
        return leased

    async def finish_attempt(
        self, n: PendingNotification, now: datetime, outcome: str, status_code: int | None, detail: str
    ) -> None:
        await self._conn.execute(FINISH_ATTEMPT, n.notification_id, n.attempt, now, outcome, status_code, detail)

    async def mark_delivered(self, n: PendingNotification, now: datetime) -> None:
        await self._conn.execute(MARK_DELIVERED, n.notification_id, now)

    async def mark_failed(self, n: PendingNotification, now: datetime, reason: str) -> None:
        await self._conn.execute(MARK_FAILED, n.notification_id, now, reason)

    async def schedule_retry(self, n: PendingNotification, at: datetime, reason: str) -> None:
        await self._conn.execute(SCHEDULE_RETRY, n.notification_id, at, reason)
