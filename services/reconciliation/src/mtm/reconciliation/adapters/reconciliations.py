"""Reconciliations and personal medication lists in Postgres: how events change them, what tools read."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

import asyncpg

from mtm.contracts import (
    CommandReply,
    EventEnvelope,
    GetMedicationList,
    MedicationDispensed,
    MedicationsReconciled,
    TransitionOfCareRecorded,
)
from mtm.contracts.identity import Actor
from mtm.platform.projection import Projection, Tx
from mtm.reconciliation.domain import MedicationList, apply_fill, apply_to_medication_list, to_fhir_list

INSERT_RECONCILIATIONS = """
INSERT INTO reconciliations
    (event_id, transition_event_id, patient_id, item_count, discrepancy_count, medications_reconciled, reconciled_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::int[], $6::json[], $7::timestamptz[])
ON CONFLICT (transition_event_id) DO NOTHING
"""
# Discharges and fills of one patient are recorded by different consumers at once: each transaction takes the
# patient's lock first, also for a patient with no list yet (where FOR UPDATE finds no row to lock), so one
# list is never computed from a state another transaction is replacing, and they commit in the order they apply.
LOCK_PATIENTS = "SELECT pg_advisory_xact_lock($1::int, hashtext(p)) FROM unnest($2::text[]) AS p ORDER BY p"
PATIENT_LOCK_NAMESPACE = 7_320_011
LOCK_LISTS = "SELECT patient_id, medication_list FROM medication_lists WHERE patient_id = ANY($1::text[]) FOR UPDATE"
UPSERT_LISTS = """
INSERT INTO medication_lists (patient_id, last_event_id, medication_list, updated_at)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::json[], $4::timestamptz[])
ON CONFLICT (patient_id) DO UPDATE
SET last_event_id = EXCLUDED.last_event_id, medication_list = EXCLUDED.medication_list,
    updated_at = EXCLUDED.updated_at
"""
SELECT_LIST = "SELECT medication_list FROM medication_lists WHERE patient_id = $1"


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    reconciled = [e for e in events if isinstance(e, MedicationsReconciled)]
    listed = [e for e in events if isinstance(e, MedicationsReconciled | MedicationDispensed)]
    if reconciled:
        await _insert_reconciliations(tx, reconciled)
    if listed:
        await _update_medication_lists(tx.conn, listed)


async def _insert_reconciliations(tx: Tx, reconciled: Sequence[MedicationsReconciled]) -> None:
    await tx.conn.execute(
        INSERT_RECONCILIATIONS,
        [e.id for e in reconciled],
        [e.data.transition_event_id for e in reconciled],
        [e.patient_id for e in reconciled],
        [len(e.data.items) for e in reconciled],
        [len(e.data.discrepancies) for e in reconciled],
        [tx.body(e) for e in reconciled],
        [e.time for e in reconciled],
    )


async def _update_medication_lists(
    conn: asyncpg.Connection, events: Sequence[MedicationsReconciled | MedicationDispensed]
) -> None:
    """Each patient's list after the batch's reconciliations and fills, in order; one read and one write per batch."""
    patients = sorted({e.patient_id for e in events})
    await conn.execute(LOCK_PATIENTS, PATIENT_LOCK_NAMESPACE, patients)
    rows = await conn.fetch(LOCK_LISTS, patients)
    lists: dict[str, MedicationList] = {
        r["patient_id"]: MedicationList.model_validate_json(r["medication_list"]) for r in rows
    }
    last_event = {}
    for event in events:
        current = lists.get(event.patient_id)
        if isinstance(event, MedicationsReconciled):
            lists[event.patient_id] = apply_to_medication_list(
                current, event.data, event_id=event.id, recorded_at=event.time
            )
        else:
            lists[event.patient_id] = apply_fill(
                current, event.patient_id, event.data, event_id=event.id, recorded_at=event.time
            )
        last_event[event.patient_id] = event.id
    patients = sorted(last_event)
    await conn.execute(
        UPSERT_LISTS,
        patients,
        [last_event[p] for p in patients],
        [lists[p].model_dump_json() for p in patients],
        [lists[p].updated_at for p in patients],
    )


RECONCILIATIONS = Projection(
    migrations=files("mtm.reconciliation") / "migrations" / "projection",
    tables=("reconciliations", "medication_lists"),
    handles=(MedicationsReconciled, MedicationDispensed),
    apply=apply,
    records=(TransitionOfCareRecorded,),
)


async def medication_list(conn: asyncpg.Connection, query: GetMedicationList, actor: Actor) -> CommandReply:
    raw = await conn.fetchval(SELECT_LIST, query.patient_id)
    if raw is None:
        return CommandReply(
            outcome="not_found", message="no medication list for this patient", resource_id=query.patient_id
        )
    found = MedicationList.model_validate_json(raw)
    data = to_fhir_list(found) if query.format == "fhir" else found.model_dump(mode="json")
    return CommandReply(outcome="accepted", resource_id=query.patient_id, data=data)
