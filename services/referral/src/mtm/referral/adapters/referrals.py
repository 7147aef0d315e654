"""Referrals in Postgres: how events change the table, and what physicians' and pharmacists' tools read from it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import asyncpg

from mtm.contracts import (
    CommandReply,
    EventEnvelope,
    GetReferral,
    ListReferrals,
    NotificationFailed,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    ReferralRequested,
)
from mtm.contracts.identity import Actor
from mtm.platform.projection import Projection, Tx, runs
from mtm.referral.domain.referrals import Overdue

INSERT_REFERRALS = """
INSERT INTO referrals
    (referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, status, referral, requested_at,
     respond_by, escalate_at)
SELECT r.referral_id, r.task_id, r.patient_id, r.correlation_id, r.physician_id, r.pharmacist_id, 'requested',
       r.referral, r.requested_at, r.respond_by, r.respond_by
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::json[], $8::timestamptz[],
            $9::timestamptz[])
    AS r(referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, referral, requested_at,
         respond_by)
ON CONFLICT (referral_id) DO NOTHING
"""
MARK_ANSWERED = """
UPDATE referrals SET status = $2, decision = $2, answer = $3, answered_at = $4 WHERE referral_id = $1
"""
MARK_ACKNOWLEDGED = """
UPDATE referrals SET acknowledged_at = coalesce(acknowledged_at, $2), acknowledged_by = coalesce(acknowledged_by, $3)
WHERE referral_id = $1
"""
MARK_ESCALATED = """
UPDATE referrals SET escalations = $2, last_escalated_at = $3, escalate_at = $4
WHERE referral_id = $1 AND escalations < $2
"""
INSERT_FAILURES = """
INSERT INTO referral_notification_failures (notification_id, referral_id, channel, attempts, reason, failed_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[], $6::timestamptz[])
ON CONFLICT (notification_id) DO NOTHING
"""
PATIENT_OF_REFERRAL = "SELECT patient_id FROM referrals WHERE referral_id = $1"
REFERRAL_COLUMNS = """
r.referral_id, r.task_id, r.patient_id, r.physician_id, r.pharmacist_id, r.status, r.requested_at, r.referral,
r.answer, r.answered_at, r.respond_by, r.escalations, r.last_escalated_at, r.acknowledged_at, r.acknowledged_by,
coalesce((SELECT json_agg(json_build_object('channel', f.channel, 'attempts', f.attempts, 'reason', f.reason,
                                            'failed_at', f.failed_at) ORDER BY f.failed_at, f.notification_id)
          FROM referral_notification_failures f WHERE f.referral_id = r.referral_id), '[]') AS failures
"""
# Unanswered first, unread first among them, then the oldest: a physician's inbox and a pharmacist's follow-up.
LIST_REFERRALS = f"""
SELECT {REFERRAL_COLUMNS} FROM referrals r
WHERE ($1::text IS NULL OR r.physician_id = $1) AND ($2::text IS NULL OR r.status = $2)
  AND ($4::uuid IS NULL OR r.task_id = $4) AND ($7::text IS NULL OR r.patient_id = $7)
  AND (NOT $5::boolean
       OR (r.status = 'requested' AND r.escalations > 0)
       OR EXISTS (SELECT 1 FROM referral_notification_failures f WHERE f.referral_id = r.referral_id))
ORDER BY r.status <> 'requested', r.acknowledged_at IS NOT NULL, r.requested_at, r.referral_id
LIMIT $3 OFFSET $6
"""
GET_REFERRAL = f"SELECT {REFERRAL_COLUMNS} FROM referrals r WHERE r.referral_id = $1"
# Unanswered referrals whose deadline passed, oldest deadline first (the escalation timer's look).
DUE_ESCALATIONS = """
SELECT referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, escalations, escalate_at
FROM referrals WHERE status = 'requested' AND escalate_at <= $1
ORDER BY escalate_at, referral_id LIMIT $2
"""


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    for run in runs(events):
        first = run[0]
        if isinstance(first, ReferralRequested):
            await _insert_referrals(tx, run)  # type: ignore[arg-type]
        elif isinstance(first, ReferralAnswered):
            await tx.conn.executemany(
                MARK_ANSWERED, [(e.data.referral_id, e.data.decision, e.data.model_dump_json(), e.time) for e in run]
            )
        elif isinstance(first, ReferralAcknowledged):
            await tx.conn.executemany(
                MARK_ACKNOWLEDGED, [(e.data.referral_id, e.time, e.data.physician_id) for e in run]
            )
        elif isinstance(first, ReferralEscalated):
            await tx.conn.executemany(
                MARK_ESCALATED,
                [(e.data.referral_id, e.data.escalation, e.time, e.data.next_escalation_at) for e in run],
            )
        elif isinstance(first, NotificationFailed):
            await _insert_failures(tx, run)  # type: ignore[arg-type]


async def _insert_referrals(tx: Tx, requested: Sequence[ReferralRequested]) -> None:
    await tx.conn.execute(
        INSERT_REFERRALS,
        [e.data.referral_id for e in requested],
        [e.data.task_id for e in requested],
        [e.patient_id for e in requested],
        [e.correlation_id for e in requested],
        [e.data.physician_id for e in requested],
        [e.data.pharmacist_id for e in requested],
        [e.data.model_dump_json() for e in requested],
        [e.time for e in requested],
        [e.data.respond_by for e in requested],
    )


async def _insert_failures(tx: Tx, failed: Sequence[NotificationFailed]) -> None:
    await tx.conn.execute(
        INSERT_FAILURES,
        [e.data.notification_id for e in failed],
        [e.data.referral_id for e in failed],
        [e.data.channel for e in failed],
        [e.data.attempts for e in failed],
        [e.data.reason for e in failed],
        [e.time for e in failed],
    )


REFERRALS = Projection(
    migrations=files("mtm.referral") / "migrations" / "projection",
    tables=("referrals", "referral_notification_failures"),
    handles=(ReferralRequested, ReferralAnswered, ReferralAcknowledged, ReferralEscalated, NotificationFailed),
    apply=apply,
    erase=(
        "DELETE FROM referral_notification_failures WHERE referral_id IN"
        " (SELECT referral_id FROM referrals WHERE patient_id = $1)",
        "DELETE FROM referrals WHERE patient_id = $1",
    ),
)


async def patient_of_referral(conn: asyncpg.Connection, command: Any) -> str | None:
    return await conn.fetchval(PATIENT_OF_REFERRAL, command.referral_id)


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def referral_view(r: asyncpg.Record, now: datetime) -> dict[str, Any]:
    """A referral as tools show it: the request, where it stands, and its follow-through."""
    return {
        "referral_id": str(r["referral_id"]),
        "task_id": str(r["task_id"]),
        "patient": f"Patient/{r['patient_id']}",
        "physician_id": r["physician_id"],
        "pharmacist_id": r["pharmacist_id"],
        "status": r["status"],
        "requested_at": r["requested_at"].isoformat(),
        "referral": json.loads(r["referral"]),
        "answer": json.loads(r["answer"]) if r["answer"] else None,
        "answered_at": _when(r["answered_at"]),
        "respond_by": _when(r["respond_by"]),
        "overdue": r["status"] == "requested" and r["respond_by"] is not None and r["respond_by"] <= now,
        "escalations": r["escalations"],
        "last_escalated_at": _when(r["last_escalated_at"]),
        "acknowledged_at": _when(r["acknowledged_at"]),
        "acknowledged_by": r["acknowledged_by"],
        "notification_failures": json.loads(r["failures"]),
    }


async def list_referrals(conn: asyncpg.Connection, query: ListReferrals, actor: Actor) -> CommandReply:
    # A physician sees only the referrals addressed to them, whatever the query asks for.
    physician = actor.acting_as if actor.role == "physician" else query.physician_id
    rows = await conn.fetch(
        LIST_REFERRALS,
        physician,
        query.status,
        query.limit,
        query.task_id,
        query.needs_attention,
        query.offset,
        query.patient_id,
    )
    now = datetime.now(UTC)
    found = [referral_view(r, now) for r in rows]
    return CommandReply(outcome="accepted", message=f"{len(found)} referrals", data=found)


async def get_referral(conn: asyncpg.Connection, query: GetReferral, actor: Actor) -> CommandReply:
    """One referral; to a physician it is addressed to someone else, it does not exist."""
    row = await conn.fetchrow(GET_REFERRAL, query.referral_id)
    if row is None or (actor.role == "physician" and row["physician_id"] != actor.acting_as):
        return CommandReply(outcome="not_found", message="no such referral", resource_id=str(query.referral_id))
    return CommandReply(
        outcome="accepted", resource_id=str(query.referral_id), data=referral_view(row, datetime.now(UTC))
    )


async def due_escalations(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Overdue]:
    rows = await conn.fetch(DUE_ESCALATIONS, now, limit)
    return [Overdue(**dict(r)) for r in rows]
