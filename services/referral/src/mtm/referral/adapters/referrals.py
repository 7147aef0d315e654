"""Referrals in Postgres: how events change the table, and what physicians' tools read from it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import asyncpg

from mtm.contracts import CommandReply, EventEnvelope, ListReferrals, ReferralAnswered, ReferralRequested
from mtm.contracts.identity import Actor
from mtm.platform.projection import Projection, Tx, runs

INSERT_REFERRALS = """
INSERT INTO referrals
    (referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, status, referral, requested_at)
SELECT r.referral_id, r.task_id, r.patient_id, r.correlation_id, r.physician_id, r.pharmacist_id, 'requested',
       r.referral, r.requested_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::json[], $8::timestamptz[])
    AS r(referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, referral, requested_at)
ON CONFLICT (referral_id) DO NOTHING
"""
MARK_ANSWERED = """
UPDATE referrals SET status = $2, decision = $2, answer = $3, answered_at = $4 WHERE referral_id = $1
"""
PATIENT_OF_REFERRAL = "SELECT patient_id FROM referrals WHERE referral_id = $1"
LIST_REFERRALS = """
SELECT referral_id, task_id, patient_id, physician_id, status, requested_at, referral, answer, answered_at
FROM referrals
WHERE ($1::text IS NULL OR physician_id = $1) AND ($2::text IS NULL OR status = $2)
  AND ($4::text IS NULL OR patient_id = $4)
ORDER BY requested_at, referral_id LIMIT $3
"""


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    for run in runs(events):
        if isinstance(run[0], ReferralRequested):
            await _insert_referrals(tx, run)  # type: ignore[arg-type]
        elif isinstance(run[0], ReferralAnswered):
            await tx.conn.executemany(
                MARK_ANSWERED, [(e.data.referral_id, e.data.decision, e.data.model_dump_json(), e.time) for e in run]
            )


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
    )


REFERRALS = Projection(
    migrations=files("mtm.referral") / "migrations" / "projection",
    tables=("referrals",),
    handles=(ReferralRequested, ReferralAnswered),
    apply=apply,
)


async def patient_of_referral(conn: asyncpg.Connection, command: Any) -> str | None:
    return await conn.fetchval(PATIENT_OF_REFERRAL, command.referral_id)


async def list_referrals(conn: asyncpg.Connection, query: ListReferrals, actor: Actor) -> CommandReply:
    # A physician sees only the referrals addressed to them, whatever the query asks for.
    physician = actor.acting_as if actor.role == "physician" else query.physician_id
    rows = await conn.fetch(LIST_REFERRALS, physician, query.status, query.limit, query.patient_id)
    found = [
        {
            "referral_id": str(r["referral_id"]),
            "task_id": str(r["task_id"]),
            "patient": f"Patient/{r['patient_id']}",
            "physician_id": r["physician_id"],
            "status": r["status"],
            "requested_at": r["requested_at"].isoformat(),
            "referral": json.loads(r["referral"]),
            "answer": json.loads(r["answer"]) if r["answer"] else None,
            "answered_at": r["answered_at"].isoformat() if r["answered_at"] else None,
        }
        for r in rows
    ]
    return CommandReply(outcome="accepted", message=f"{len(found)} referrals", data=found)
