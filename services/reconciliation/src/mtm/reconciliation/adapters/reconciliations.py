"""Reconciliations and personal medication lists in Postgres: how events change them, what tools read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from importlib.resources import files
from typing import NamedTuple

import asyncpg

from mtm.contracts import (
    CommandReply,
    EventEnvelope,
    GetMedicationHistory,
    GetMedicationList,
    MedicationDispensed,
    MedicationsReconciled,
    TransitionOfCareRecorded,
)
from mtm.contracts.identity import Actor
from mtm.platform.projection import Projection, Tx
from mtm.platform.service import Database
from mtm.reconciliation.domain import MedicationList, apply_fill, apply_to_medication_list, to_fhir_list
from mtm.reconciliation.domain.identity import Recorded, discharge_digest

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
INSERT_TRANSITIONS = """
INSERT INTO transitions (event_id, patient_id, encounter_id, digest, recorded_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""
SELECT_RECORDED = "SELECT patient_id, digest FROM transitions WHERE event_id = $1"
SELECT_RECORDED_MANY = "SELECT event_id, patient_id, digest FROM transitions WHERE event_id = ANY($1::uuid[])"
SAME_ENCOUNTER_SAID_BEFORE = """
SELECT EXISTS (
    SELECT 1 FROM transitions
    WHERE patient_id = $1 AND encounter_id = $2 AND digest = $3 AND event_id <> $4
)
"""
# Of these discharges, the ones whose encounter was recorded under another id, with that record's digest: the digest
# of a discharge (a serialization and a hash of the whole document) is computed only for those, which are rare.
OTHERS_OF_ENCOUNTERS = """
SELECT d.event_id, t.digest
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(event_id, patient_id, encounter_id)
JOIN transitions t ON t.patient_id = d.patient_id AND t.encounter_id = d.encounter_id AND t.event_id <> d.event_id
"""
SELECT_HISTORY = """
SELECT medications_reconciled, reconciled_at FROM reconciliations WHERE patient_id = $1
ORDER BY reconciled_at DESC, event_id LIMIT $2
"""


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    transitions = [e for e in events if isinstance(e, TransitionOfCareRecorded)]
    if transitions:
        await tx.conn.execute(
            INSERT_TRANSITIONS,
            [e.id for e in transitions],
            [e.patient_id for e in transitions],
            [e.data.encounter_id for e in transitions],
            [discharge_digest(e.data) for e in transitions],
            [e.time for e in transitions],
        )
    reconciled = [e for e in events if isinstance(e, MedicationsReconciled)]
    listed = [e for e in events if isinstance(e, MedicationsReconciled | MedicationDispensed)]
    if reconciled:
        await _insert_reconciliations(tx, reconciled)
    if listed:
        await _update_medication_lists(tx, listed)


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


class _KeptList(NamedTuple):
    """A patient's list as a rebuild keeps it, with the last event that touched it (the row's `last_event_id`)."""

    patient_id: str
    medication_list: MedicationList
    last_event_id: uuid.UUID


async def _update_medication_lists(tx: Tx, events: Sequence[MedicationsReconciled | MedicationDispensed]) -> None:
    """Each patient's list after the batch's reconciliations and fills, in order; one read and one write per batch.

    In a rebuild (the only writer of its tables) the lists are kept in memory, not locked and read back, and
    written once: when let go from memory, or at the end of the replay (`write_lists`). Lists are stored without the
    fields at their defaults (they read back equal): a fill rewrites its patient's whole list, and much of an entry is
    empty fields: about half the bytes written, read and parsed per fill.
    """
    conn = tx.conn
    patients = sorted({e.patient_id for e in events})
    lists: dict[str, MedicationList] = {}
    last_event: dict[str, uuid.UUID] = {}
    if tx.kept is not None:
        for patient in patients:
            found = tx.kept.get(patient)
            if isinstance(found, _KeptList):
                lists[patient] = found.medication_list
    else:
        await conn.execute(LOCK_PATIENTS, PATIENT_LOCK_NAMESPACE, patients)
    unknown = [p for p in patients if p not in lists]
    if unknown:
        rows = await conn.fetch(LOCK_LISTS, unknown)
        lists |= {r["patient_id"]: MedicationList.model_validate_json(r["medication_list"]) for r in rows}
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
    if tx.kept is None:
        await _upsert_lists(conn, [_KeptList(p, lists[p], last_event[p]) for p in patients])
        return
    for patient in patients:
        tx.kept.put(patient, _KeptList(patient, lists[patient], last_event[patient]), unwritten=True)
    # A list let go from memory is read back from the table the next time its patient comes up.
    let_go = tx.kept.take_let_go()
    if let_go:
        await write_lists(tx, let_go)


async def write_lists(tx: Tx, kept: Sequence[object]) -> None:
    """Write lists a rebuild kept in memory."""
    lists = [k for k in kept if isinstance(k, _KeptList)]
    if len(lists) != len(kept):
        raise TypeError("the medication lists' projection was given a state it did not keep")
    await _upsert_lists(tx.conn, lists)


async def _upsert_lists(conn: asyncpg.Connection, lists: Sequence[_KeptList]) -> None:
    await conn.execute(
        UPSERT_LISTS,
        [k.patient_id for k in lists],
        [k.last_event_id for k in lists],
        [k.medication_list.model_dump_json(exclude_defaults=True) for k in lists],
        [k.medication_list.updated_at for k in lists],
    )


RECONCILIATIONS = Projection(
    migrations=files("mtm.reconciliation") / "migrations" / "projection",
    tables=("transitions", "reconciliations", "medication_lists"),
    handles=(TransitionOfCareRecorded, MedicationsReconciled, MedicationDispensed),
    apply=apply,
    write_kept=write_lists,
    erase=tuple(
        f"DELETE FROM {table} WHERE patient_id = $1" for table in ("transitions", "reconciliations", "medication_lists")
    ),
)


# Answers looked up but never asked for (a batch given up half way) are dropped past this many.
LOOKED_UP_MAX = 100_000


class DischargeLedger:
    """What the projection knows of discharges already recorded, for the use cases that must not repeat them.

    A consumer looks a whole batch up at once (`look_up_recorded`, `look_up_said_before`): each answer is then
    taken once by the use case asking about that discharge, and a discharge not looked up is asked on its own.
    The answers are as of the batch's start, as those asked one by one were: a batch's own discharges are
    recorded only when it commits.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._recorded: dict[uuid.UUID, Recorded | None] = {}
        self._said_before: dict[uuid.UUID, bool] = {}

    async def look_up_recorded(self, transitions: Sequence[TransitionOfCareRecorded]) -> None:
        ids = [t.id for t in transitions]
        if not ids:
            return
        async with self._database.acquire() as conn:
            rows = await conn.fetch(SELECT_RECORDED_MANY, ids)
        found = {row["event_id"]: Recorded(row["patient_id"], row["digest"]) for row in rows}
        if len(self._recorded) > LOOKED_UP_MAX:
            self._recorded.clear()
        self._recorded.update({event_id: found.get(event_id) for event_id in ids})

    async def look_up_said_before(self, transitions: Sequence[TransitionOfCareRecorded]) -> None:
        asked = [t for t in transitions if t.data.encounter_id is not None]
        if not asked:
            return
        async with self._database.acquire() as conn:
            rows = await conn.fetch(
                OTHERS_OF_ENCOUNTERS,
                [t.id for t in asked],
                [t.patient_id for t in asked],
                [t.data.encounter_id for t in asked],
            )
        others: dict[uuid.UUID, set[str]] = {}
        for row in rows:
            others.setdefault(row["event_id"], set()).add(row["digest"])
        if len(self._said_before) > LOOKED_UP_MAX:
            self._said_before.clear()
        self._said_before.update({t.id: t.id in others and discharge_digest(t.data) in others[t.id] for t in asked})

    async def recorded(self, event_id: uuid.UUID) -> Recorded | None:
        if event_id in self._recorded:
            return self._recorded.pop(event_id)
        async with self._database.acquire() as conn:
            row = await conn.fetchrow(SELECT_RECORDED, event_id)
        return Recorded(row["patient_id"], row["digest"]) if row else None

    async def said_before(self, event: TransitionOfCareRecorded) -> bool:
        """Whether the same encounter was recorded with the same content under another id (a resend)."""
        if event.data.encounter_id is None:
            return False
        if event.id in self._said_before:
            return self._said_before.pop(event.id)
        async with self._database.acquire() as conn:
            return bool(
                await conn.fetchval(
                    SAME_ENCOUNTER_SAID_BEFORE,
                    event.patient_id,
                    event.data.encounter_id,
                    discharge_digest(event.data),
                    event.id,
                )
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


async def medication_history(conn: asyncpg.Connection, query: GetMedicationHistory, actor: Actor) -> CommandReply:
    """Each reconciled transition of care of the patient, newest first: what changed, and what was not explained."""
    rows = await conn.fetch(SELECT_HISTORY, query.patient_id, query.limit)
    if not rows:
        return CommandReply(outcome="not_found", message="no history for this patient", resource_id=query.patient_id)
    history = []
    for row in rows:
        event = MedicationsReconciled.model_validate_json(row["medications_reconciled"])
        rec = event.data
        history.append(
            {
                "event_id": str(event.id),
                "transition_event_id": str(rec.transition_event_id),
                "encounter_id": rec.encounter_id,
                "discharged_at": rec.discharged_at.isoformat() if rec.discharged_at else None,
                "reconciled_at": row["reconciled_at"].isoformat(),
                "items": [
                    {
                        "ingredients": list(item.ingredients),
                        "status": item.status,
                        "changes": list(item.changes),
                        "documented": item.documented,
                        "home": item.home.text if item.home else None,
                        "discharge": item.discharge.text if item.discharge else None,
                    }
                    for item in rec.items
                ],
                "discrepancies": [
                    d.model_dump(mode="json", include={"type", "ingredients", "message"}) for d in rec.discrepancies
                ],
            }
        )
    return CommandReply(outcome="accepted", resource_id=query.patient_id, data=history)
