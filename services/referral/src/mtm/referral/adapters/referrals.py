"""Referrals in Postgres, in domain terms."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from mtm.contracts.events import Referral, ReferralAnswer
from mtm.referral.domain.referrals import ReferralState

INSERT_REFERRALS = """
INSERT INTO referrals (referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, status, referral)
SELECT r.referral_id, r.task_id, r.patient_id, r.correlation_id, r.physician_id, r.pharmacist_id, 'requested',
       r.referral
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::json[])
    AS r(referral_id, task_id, patient_id, correlation_id, physician_id, pharmacist_id, referral)
ON CONFLICT (referral_id) DO NOTHING
RETURNING referral_id
"""
LOCK_REFERRAL = """
SELECT referral_id, physician_id, status, decision, patient_id, correlation_id FROM referrals
WHERE referral_id = $1 FOR UPDATE
"""
MARK_ANSWERED = """
UPDATE referrals SET status = $2, decision = $2, answer = $3, answered_at = $4 WHERE referral_id = $1
"""
LIST_REFERRALS = """
SELECT referral_id, task_id, patient_id, physician_id, status, requested_at, referral FROM referrals
WHERE ($1::text IS NULL OR physician_id = $1) AND ($2::text IS NULL OR status = $2)
ORDER BY requested_at LIMIT $3
"""


class NewReferral:
    __slots__ = ("correlation_id", "patient_id", "referral")

    def __init__(self, referral: Referral, patient_id: str, correlation_id: uuid.UUID) -> None:
        self.referral = referral
        self.patient_id = patient_id
        self.correlation_id = correlation_id


class LockedReferral:
    __slots__ = ("correlation_id", "patient_id", "state")

    def __init__(self, row: asyncpg.Record) -> None:
        self.state = ReferralState(
            referral_id=row["referral_id"],
            physician_id=row["physician_id"],
            status=row["status"],
            decision=row["decision"],
        )
        self.patient_id: str = row["patient_id"]
        self.correlation_id: uuid.UUID = row["correlation_id"]


class ReferralRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_all(self, referrals: Sequence[NewReferral]) -> set[uuid.UUID]:
        if not referrals:
            return set()
        rows = await self._conn.fetch(
            INSERT_REFERRALS,
            [r.referral.referral_id for r in referrals],
            [r.referral.task_id for r in referrals],
            [r.patient_id for r in referrals],
            [r.correlation_id for r in referrals],
            [r.referral.physician_id for r in referrals],
            [r.referral.pharmacist_id for r in referrals],
            [r.referral.model_dump_json() for r in referrals],
        )
        return {row["referral_id"] for row in rows}

    async def lock(self, referral_id: uuid.UUID) -> LockedReferral | None:
        row = await self._conn.fetchrow(LOCK_REFERRAL, referral_id)
        return LockedReferral(row) if row else None

    async def mark_answered(self, answer: ReferralAnswer, at: datetime) -> None:
        await self._conn.execute(MARK_ANSWERED, answer.referral_id, answer.decision, answer.model_dump_json(), at)

    async def list(self, physician_id: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(LIST_REFERRALS, physician_id, status, limit)
        return [
            {
                "referral_id": str(r["referral_id"]),
                "task_id": str(r["task_id"]),
                "patient": f"Patient/{r['patient_id']}",
                "physician_id": r["physician_id"],
                "status": r["status"],
                "requested_at": r["requested_at"].isoformat(),
                "referral": json.loads(r["referral"]),
            }
            for r in rows
        ]
