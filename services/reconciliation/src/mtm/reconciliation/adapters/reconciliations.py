"""Reconciliations and personal medication lists in Postgres, in domain terms."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from mtm.contracts.events import Reconciliation
from mtm.reconciliation.domain import MedicationList

INSERT_RECONCILIATIONS = """
INSERT INTO reconciliations
    (event_id, transition_event_id, patient_id, stream_seq, item_count, discrepancy_count, medications_reconciled)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::int[], $6::int[], $7::json[])
ON CONFLICT (transition_event_id) DO NOTHING
"""
LOCK_LISTS = """
SELECT patient_id, last_seq, medication_list FROM medication_lists WHERE patient_id = ANY($1::text[]) FOR UPDATE
"""
UPSERT_LISTS = """
INSERT INTO medication_lists (patient_id, last_seq, last_event_id, medication_list, updated_at)
SELECT p, s, e, l, now() FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::json[]) AS t(p, s, e, l)
ON CONFLICT (patient_id) DO UPDATE
SET last_seq = EXCLUDED.last_seq, last_event_id = EXCLUDED.last_event_id,
    medication_list = EXCLUDED.medication_list, updated_at = now()
WHERE medication_lists.last_seq < EXCLUDED.last_seq
"""
SELECT_LIST = "SELECT medication_list FROM medication_lists WHERE patient_id = $1"


@dataclass(frozen=True)
class StoredList:
    last_seq: int
    medication_list: MedicationList


@dataclass(frozen=True)
class NewReconciliation:
    event_id: uuid.UUID
    transition_event_id: uuid.UUID
    patient_id: str
    stream_seq: int
    reconciliation: Reconciliation
    event_json: str
    """The MedicationsReconciled event, serialized once for both this table and the outbox."""


class ReconciliationRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_all(self, items: Sequence[NewReconciliation]) -> None:
        await self._conn.execute(
            INSERT_RECONCILIATIONS,
            [i.event_id for i in items],
            [i.transition_event_id for i in items],
            [i.patient_id for i in items],
            [i.stream_seq for i in items],
            [len(i.reconciliation.items) for i in items],
            [len(i.reconciliation.discrepancies) for i in items],
            [i.event_json for i in items],
        )

    async def lock_lists(self, patient_ids: Sequence[str]) -> dict[str, StoredList]:
        rows = await self._conn.fetch(LOCK_LISTS, sorted(set(patient_ids)))
        return {
            r["patient_id"]: StoredList(r["last_seq"], MedicationList.model_validate_json(r["medication_list"]))
            for r in rows
        }

    async def save_lists(self, lists: dict[str, tuple[int, uuid.UUID, MedicationList]]) -> None:
        patients = sorted(lists)
        await self._conn.execute(
            UPSERT_LISTS,
            patients,
            [lists[p][0] for p in patients],
            [lists[p][1] for p in patients],
            [lists[p][2].model_dump_json() for p in patients],
        )

    async def medication_list(self, patient_id: str) -> MedicationList | None:
        raw = await self._conn.fetchval(SELECT_LIST, patient_id)
        return MedicationList.model_validate_json(raw) if raw else None
