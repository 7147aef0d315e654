"""Reconciliations and personal medication lists in Postgres: how events change them, what tools read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from importlib.resources import files
from typing import NamedTuple

import asyncpg
from pydantic import TypeAdapter

from mtm.contracts import (
    CommandReply,
    EventEnvelope,
    GetMedicationHistory,
    GetMedicationList,
    MedicationDispensed,
    MedicationsReconciled,
    TransitionOfCareRecorded,
)
from mtm.contracts.envelope import Frozen
from mtm.contracts.identity import Actor
from mtm.platform.projection import Projection, Tx
from mtm.platform.service import Database
from mtm.reconciliation.domain import (
    FILL_HISTORY,
    Fill,
    MedicationList,
    MedicationListEntry,
    apply_fill,
    apply_to_medication_list,
    as_fill,
    fill_key,
    list_order,
    pharmacy_entry,
    to_fhir_list,
)
from mtm.reconciliation.domain.identity import Recorded, digest_of_json, discharge_digest

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
# A list with its entries, each with its fills oldest first (dispense ids compared by code point, as Python does: "C"
# collation compares UTF-8 bytes, which is the same order): one round trip, one JSON array per list, read by one
# call of the JSON parser.
_SELECT_LISTS = """
SELECT l.patient_id, l.medication_list, l.updated_at,
    (SELECT json_agg(json_build_object('key', e.entry_key, 'slot', e.entry_slot, 'entry', e.entry, 'fills',
        (SELECT json_agg(json_build_object(
                    'event_id', f.event_id, 'dispense_id', f.dispense_id, 'filled_on', f.filled_on,
                    'days_supply', f.days_supply, 'quantity', f.quantity, 'pharmacy_id', f.pharmacy_id,
                    'prescriber_id', f.prescriber_id)
                ORDER BY f.filled_on, f.dispense_id COLLATE "C")
         FROM medication_fills f
         WHERE f.patient_id = e.patient_id AND f.entry_key = e.entry_key AND f.entry_slot = e.entry_slot)))
     FROM medication_list_entries e WHERE e.patient_id = l.patient_id) AS entries
FROM medication_lists l
"""
LOCK_LISTS = _SELECT_LISTS + "WHERE l.patient_id = ANY($1::text[]) FOR UPDATE OF l"
SELECT_LIST = _SELECT_LISTS + "WHERE l.patient_id = $1"
# What a fill needs to know of a list: which medications are on it (the keys of the entries fills join).
LOCK_ENTRY_KEYS = """
SELECT l.patient_id, l.medication_list IS NOT NULL AS in_document,
    ARRAY(SELECT e.entry_key FROM medication_list_entries e WHERE e.patient_id = l.patient_id AND e.entry_slot = 0)
        AS entry_keys
FROM medication_lists l WHERE l.patient_id = ANY($1::text[]) FOR UPDATE OF l
"""
UPSERT_LISTS = """
INSERT INTO medication_lists (patient_id, last_event_id, medication_list, updated_at)
SELECT p, e, NULL, u FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS t(p, e, u)
ON CONFLICT (patient_id) DO UPDATE
SET last_event_id = EXCLUDED.last_event_id, medication_list = NULL, updated_at = EXCLUDED.updated_at
"""
# Fills change a list's last event and, unless all were seen before (no time given), when it last changed.
UPSERT_LIST_HEADS = """
INSERT INTO medication_lists AS l (patient_id, last_event_id, medication_list, updated_at)
SELECT p, e, NULL, coalesce(u, '-infinity') FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS t(p, e, u)
ON CONFLICT (patient_id) DO UPDATE
SET last_event_id = EXCLUDED.last_event_id, updated_at = greatest(l.updated_at, EXCLUDED.updated_at)
"""
INSERT_ENTRIES = """
INSERT INTO medication_list_entries (patient_id, entry_key, entry_slot, entry)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::json[])
"""
# Whole lists' entries: each list's entries as one JSON array (serialised in one call), with each entry's key and
# slot by its list's and its own position.
INSERT_LISTS_ENTRIES = """
INSERT INTO medication_list_entries (patient_id, entry_key, entry_slot, entry)
SELECT l.patient_id, k.entry_key, k.entry_slot, e.entry
FROM unnest($1::text[], $2::json[]) WITH ORDINALITY AS l(patient_id, entries, n)
CROSS JOIN LATERAL json_array_elements(l.entries) WITH ORDINALITY AS e(entry, i)
JOIN unnest($3::bigint[], $4::bigint[], $5::text[], $6::int[]) AS k(n, i, entry_key, entry_slot)
    ON k.n = l.n AND k.i = e.i
"""
DELETE_PATIENTS_ENTRIES = "DELETE FROM medication_list_entries WHERE patient_id = ANY($1::text[])"
# A fill seen before (the same dispense on the entry) is not inserted; the ones that were tell when each list last
# changed.
INSERT_FILLS = """
INSERT INTO medication_fills
    (patient_id, entry_key, entry_slot, dispense_id, event_id, filled_on, days_supply, quantity, pharmacy_id,
     prescriber_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::uuid[], $6::date[], $7::int[],
                     $8::float8[], $9::text[], $10::text[])
ON CONFLICT DO NOTHING
RETURNING event_id
"""
# Fills past the latest FILL_HISTORY of the given entries, in the order the domain keeps them (dispense ids compared
# by code point, as Python does: "C" collation compares UTF-8 bytes, which is the same order).
TRIM_FILLS = """
DELETE FROM medication_fills f
USING (
    SELECT patient_id, entry_key, entry_slot, dispense_id,
        row_number() OVER (
            PARTITION BY patient_id, entry_key, entry_slot ORDER BY filled_on DESC, dispense_id COLLATE "C" DESC
        ) AS newest
    FROM medication_fills
    WHERE (patient_id, entry_key, entry_slot) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::int[]))
) r
WHERE r.newest > $4 AND f.patient_id = r.patient_id AND f.entry_key = r.entry_key
    AND f.entry_slot = r.entry_slot AND f.dispense_id = r.dispense_id
RETURNING f.patient_id, f.entry_key, f.dispense_id
"""
DELETE_FILLS = """
DELETE FROM medication_fills f
USING unnest($1::text[], $2::text[], $3::int[], $4::text[]) AS d(patient_id, entry_key, entry_slot, dispense_id)
WHERE f.patient_id = d.patient_id AND f.entry_key = d.entry_key AND f.entry_slot = d.entry_slot
    AND f.dispense_id = d.dispense_id
"""
DELETE_PATIENTS_FILLS = "DELETE FROM medication_fills WHERE patient_id = ANY($1::text[])"
INSERT_TRANSITIONS = """
INSERT INTO transitions (event_id, patient_id, encounter_id, digest, recorded_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""
SELECT_RECORDED = "SELECT patient_id, digest FROM transitions WHERE event_id = $1"
SAME_ENCOUNTER_SAID_BEFORE = """
SELECT EXISTS (
    SELECT 1 FROM transitions
    WHERE patient_id = $1 AND encounter_id = $2 AND digest = $3 AND event_id <> $4
)
"""
# For a batch of discharges, in one round trip: each one's record under its own id (`same_id`), and the records of
# its encounter under other ids, with their digests. The digest of a discharge (a serialization and a hash of the
# whole document) is then computed only for those whose encounter was recorded before, which are rare. Both halves
# join the ids asked rather than `event_id = ANY($1)`: planned while the table was young, that scanned it whole.
LOOK_UP_DISCHARGES = """
WITH asked AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(event_id, patient_id, encounter_id)
)
SELECT d.event_id AS asked, true AS same_id, t.patient_id, t.digest
FROM asked d JOIN transitions t ON t.event_id = d.event_id
UNION ALL
SELECT d.event_id, false, t.patient_id, t.digest
FROM asked d
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
            [_digest(tx, e) for e in transitions],
            [e.time for e in transitions],
        )
    reconciled = [e for e in events if isinstance(e, MedicationsReconciled)]
    listed = [e for e in events if isinstance(e, MedicationsReconciled | MedicationDispensed)]
    if reconciled:
        await _insert_reconciliations(tx, reconciled)
    if listed:
        await _update_medication_lists(tx, listed)


def _digest(tx: Tx, transition: TransitionOfCareRecorded) -> str:
    """The discharge's digest; its data's JSON, serialized for it, also makes the event's JSON for the outbox (a
    discharge recorded from the intake is published by the same transaction), which is most of its length."""
    data_json = transition.data.model_dump_json()
    tx.data_serialized(transition, data_json)
    return digest_of_json(data_json)


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


# A match key's ingredients joined in `entry_key`; no name holds it (names are normalised words).
KEY_JOIN = "\x1f"
# A fill row as `medication_fills` holds it, from patient_id to prescriber_id.
FillRow = tuple[str, str, int, str, uuid.UUID, date, int, float | None, str | None, str | None]
# What `medication_list_entries.entry` leaves out: the fills (rows of their own) and what follows from them.
_ENTRY_APART = {"fills", "last_filled_on"}


def _entry_key(match_key: tuple[str, ...]) -> str:
    return KEY_JOIN.join(match_key)


def _entry_json(entry: MedicationListEntry) -> str:
    return entry.model_dump_json(exclude_defaults=True, exclude=_ENTRY_APART)


def _entries_json(ml: MedicationList) -> str:
    """The list's entries as `_entry_json` writes each, in one JSON array."""
    return _ENTRIES.dump_json(ml.entries, exclude_defaults=True, exclude={"__all__": _ENTRY_APART}).decode()


_ENTRIES = TypeAdapter(tuple[MedicationListEntry, ...])


async def _update_medication_lists(tx: Tx, events: Sequence[MedicationsReconciled | MedicationDispensed]) -> None:
    """Each patient's list after the batch's reconciliations and fills, in order.

    Live, a patient whose events in the batch are all fills is written without reading the list: each fill is a
    row, and a medication not on the list yet one entry more (rewriting the whole list was about 40 % of the CPU a
    fill cost). A patient with a reconciliation has the list read whole, changed by the domain and written back;
    one read and one write per batch. In a rebuild (the only writer of its tables) every list is kept in memory,
    not locked and read back, and written once: when let go from memory, or at the end of the replay
    (`write_lists`).
    """
    conn = tx.conn
    patients = sorted({e.patient_id for e in events})
    if tx.kept is None:
        await conn.execute(LOCK_PATIENTS, PATIENT_LOCK_NAMESPACE, patients)
        filled = await _only_filled(conn, events)
        if filled:
            await _record_fills(conn, [e for e in events if e.patient_id in filled], filled)  # type: ignore[misc]
            events = [e for e in events if e.patient_id not in filled]
            if not events:
                return
            patients = sorted({e.patient_id for e in events})
    lists: dict[str, MedicationList] = {}
    stored: dict[str, set[FillRow]] = {}
    last_event: dict[str, uuid.UUID] = {}
    if tx.kept is not None:
        for patient in patients:
            found = tx.kept.get(patient)
            if isinstance(found, _KeptList):
                lists[patient] = found.medication_list
    unknown = [p for p in patients if p not in lists]
    if unknown:
        for row in await conn.fetch(LOCK_LISTS, unknown):
            lists[row["patient_id"]], stored[row["patient_id"]] = _read_list(row)
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
        await _write_lists(conn, [_KeptList(p, lists[p], last_event[p]) for p in patients], stored)
        return
    for patient in patients:
        tx.kept.put(patient, _KeptList(patient, lists[patient], last_event[patient]), unwritten=True)
    # A list let go from memory is read back from the table the next time its patient comes up.
    let_go = tx.kept.take_let_go()
    if let_go:
        await write_lists(tx, let_go)


async def _only_filled(
    conn: asyncpg.Connection, events: Sequence[MedicationsReconciled | MedicationDispensed]
) -> dict[str, set[str]]:
    """The patients whose events in the batch are all fills, with the keys of the entries on their lists (locked);
    a list still in its document (written before the entries had their table) is read whole instead."""
    filled = {e.patient_id for e in events if isinstance(e, MedicationDispensed)}
    filled -= {e.patient_id for e in events if not isinstance(e, MedicationDispensed)}
    if not filled:
        return {}
    keys: dict[str, set[str]] = {p: set() for p in filled}
    for row in await conn.fetch(LOCK_ENTRY_KEYS, sorted(filled)):
        if row["in_document"]:
            del keys[row["patient_id"]]
        else:
            keys[row["patient_id"]] = set(row["entry_keys"])
    return keys


async def _record_fills(
    conn: asyncpg.Connection, fills: Sequence[MedicationDispensed], keys: dict[str, set[str]]
) -> None:
    """Fills as rows of the first entry with their key (the one `apply_fill` adds to), a medication not on the list
    joining it from the pharmacy; the oldest past the latest FILL_HISTORY let go; each list's last event and change
    time as `apply_fill` would leave them."""
    entries: list[tuple[str, str, int, str]] = []
    rows: list[FillRow] = []
    for event in fills:
        d = event.data
        key = _entry_key(fill_key(d))
        if key not in keys[event.patient_id]:
            keys[event.patient_id].add(key)
            entry = pharmacy_entry(d, as_fill(d, event.id), recorded_at=event.time)
            entries.append((event.patient_id, key, 0, _entry_json(entry)))
        # The row straight from the dispense (as `as_fill` reads it): no model built per refill.
        rows.append((event.patient_id, key, 0, d.dispense_id, event.id, d.filled_on, d.days_supply, d.quantity,
                     d.pharmacy_id, d.prescriber_id))  # fmt: skip
    if entries:
        await conn.execute(INSERT_ENTRIES, *zip(*entries, strict=True))
    inserted = {r["event_id"] for r in await conn.fetch(INSERT_FILLS, *zip(*rows, strict=True))}
    joined = sorted({(r[0], r[1]) for r in rows})
    trimmed = {
        tuple(r)
        for r in await conn.fetch(
            TRIM_FILLS, [j[0] for j in joined], [j[1] for j in joined], [0] * len(joined), FILL_HISTORY
        )
    }
    heads: dict[str, tuple[uuid.UUID, datetime | None]] = {}
    for event, row in zip(fills, rows, strict=True):
        _, changed = heads.get(event.patient_id, (event.id, None))
        # A fill older than the latest FILL_HISTORY is let go as soon as it joins, so the domain takes every copy
        # of it in the batch as new (each changes the list's time), where the insert took only the first.
        if event.id in inserted or (row[0], row[1], row[3]) in trimmed:
            changed = event.time if changed is None else max(changed, event.time)
        heads[event.patient_id] = (event.id, changed)
    await conn.execute(UPSERT_LIST_HEADS, list(heads), [h[0] for h in heads.values()], [h[1] for h in heads.values()])


def _fill_row(patient_id: str, entry_key: str, slot: int, fill: Fill) -> FillRow:
    return (patient_id, entry_key, slot, fill.dispense_id, fill.event_id, fill.filled_on, fill.days_supply,
            fill.quantity, fill.pharmacy_id, fill.prescriber_id)  # fmt: skip


def _slotted(ml: MedicationList) -> list[tuple[str, int, MedicationListEntry]]:
    """The list's entries with their keys and slots, in list order."""
    slots: dict[str, int] = {}
    out = []
    for entry in ml.entries:
        key = _entry_key(entry.match_key)
        slot = slots[key] = slots.get(key, -1) + 1
        out.append((key, slot, entry))
    return out


class _StoredEntry(Frozen):
    """An entry as `_SELECT_LISTS` reads it: its row's key and slot, the entry, and its fills."""

    key: str
    slot: int
    entry: MedicationListEntry
    fills: tuple[Fill, ...] | None = None


_STORED_ENTRIES = TypeAdapter(tuple[_StoredEntry, ...])


def _read_list(row: asyncpg.Record) -> tuple[MedicationList, set[FillRow]]:
    """A stored list with its entries and fills joined back, and the fill rows it was read from."""
    if row["medication_list"] is not None:  # written before entries had their table: the document holds it all
        found = MedicationList.model_validate_json(row["medication_list"])
        return found.model_copy(update={"updated_at": row["updated_at"]}), set()
    patient_id = row["patient_id"]
    stored = sorted(
        _STORED_ENTRIES.validate_json(row["entries"] or "[]"), key=lambda s: (*list_order(s.entry), s.key, s.slot)
    )
    rows = {_fill_row(patient_id, s.key, s.slot, f) for s in stored for f in s.fills or ()}
    entries = tuple(s.entry.model_copy(update={"fills": s.fills}) if s.fills else s.entry for s in stored)
    return MedicationList(patient_id=patient_id, entries=entries, updated_at=row["updated_at"]), rows


async def write_lists(tx: Tx, kept: Sequence[object]) -> None:
    """Write lists a rebuild kept in memory (their fills replace whatever the table held of their patients)."""
    lists = [k for k in kept if isinstance(k, _KeptList)]
    if len(lists) != len(kept):
        raise TypeError("the medication lists' projection was given a state it did not keep")
    await tx.conn.execute(DELETE_PATIENTS_FILLS, [k.patient_id for k in lists])
    await _write_lists(tx.conn, lists, {})


async def _write_lists(conn: asyncpg.Connection, lists: Sequence[_KeptList], stored: dict[str, set[FillRow]]) -> None:
    """Write the lists whole: heads, entries, and their fill rows changed from the `stored` ones (none if not given)
    to theirs."""
    patients = [k.patient_id for k in lists]
    await conn.execute(
        UPSERT_LISTS, patients, [k.last_event_id for k in lists], [k.medication_list.updated_at for k in lists]
    )
    await conn.execute(DELETE_PATIENTS_ENTRIES, patients)
    slots: list[tuple[int, int, str, int]] = []
    gone: list[FillRow] = []
    new: list[FillRow] = []
    for n, k in enumerate(lists, start=1):
        after: set[FillRow] = set()
        for i, (key, slot, entry) in enumerate(_slotted(k.medication_list), start=1):
            slots.append((n, i, key, slot))
            after.update(_fill_row(k.patient_id, key, slot, f) for f in entry.fills)
        before = stored.get(k.patient_id, set())
        gone.extend(before - after)
        new.extend(after - before)
    if slots:
        await conn.execute(
            INSERT_LISTS_ENTRIES,
            patients,
            [_entries_json(k.medication_list) for k in lists],
            *zip(*slots, strict=True),
        )
    if gone:
        await conn.execute(DELETE_FILLS, *list(zip(*gone, strict=True))[:4])
    if new:
        await conn.fetch(INSERT_FILLS, *zip(*sorted(new, key=_row_order), strict=True))


def _row_order(row: FillRow) -> tuple[str, str, int, date, str]:
    return row[0], row[1], row[2], row[5], row[3]


RECONCILIATIONS = Projection(
    migrations=files("mtm.reconciliation") / "migrations" / "projection",
    tables=("transitions", "reconciliations", "medication_lists", "medication_list_entries", "medication_fills"),
    handles=(TransitionOfCareRecorded, MedicationsReconciled, MedicationDispensed),
    apply=apply,
    write_kept=write_lists,
    erase=tuple(
        f"DELETE FROM {table} WHERE patient_id = $1"
        for table in (
            "transitions",
            "reconciliations",
            "medication_lists",
            "medication_list_entries",
            "medication_fills",
        )
    ),
)


# Answers looked up but never asked for (a batch given up half way) are dropped past this many.
LOOKED_UP_MAX = 100_000


class DischargeLedger:
    """What the projection knows of discharges already recorded, for the use cases that must not repeat them.

    The intake looks a whole batch up at once (`look_up`): each answer is then taken once by the use case asking
    about that discharge, and a discharge not looked up is asked on its own. The projection's answers are as of
    the batch's start (a batch's own discharges are recorded only when it commits), so `said_before` also
    remembers the encounters reconciled earlier in the same batch: a resend in the batch of its first sending is
    reconciled once too.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._recorded: dict[uuid.UUID, Recorded | None] = {}
        self._said_before: dict[uuid.UUID, bool] = {}
        self._in_batch: dict[tuple[str, str], list[TransitionOfCareRecorded]] = {}

    async def look_up(self, transitions: Sequence[TransitionOfCareRecorded]) -> None:
        """The start of a batch: what the projection knows of its discharges, in one query."""
        self._in_batch.clear()
        if not transitions:
            return
        async with self._database.acquire() as conn:
            rows = await conn.fetch(
                LOOK_UP_DISCHARGES,
                [t.id for t in transitions],
                [t.patient_id for t in transitions],
                [t.data.encounter_id for t in transitions],
            )
        recorded: dict[uuid.UUID, Recorded] = {}
        others: dict[uuid.UUID, set[str]] = {}
        for row in rows:
            if row["same_id"]:
                recorded[row["asked"]] = Recorded(row["patient_id"], row["digest"])
            else:
                others.setdefault(row["asked"], set()).add(row["digest"])
        if len(self._recorded) > LOOKED_UP_MAX or len(self._said_before) > LOOKED_UP_MAX:
            self._recorded.clear()
            self._said_before.clear()
        self._recorded.update({t.id: recorded.get(t.id) for t in transitions})
        self._said_before.update(
            {
                t.id: t.id in others and discharge_digest(t.data) in others[t.id]
                for t in transitions
                if t.data.encounter_id is not None
            }
        )

    async def recorded(self, event_id: uuid.UUID) -> Recorded | None:
        if event_id in self._recorded:
            return self._recorded.pop(event_id)
        async with self._database.acquire() as conn:
            row = await conn.fetchrow(SELECT_RECORDED, event_id)
        return Recorded(row["patient_id"], row["digest"]) if row else None

    async def said_before(self, event: TransitionOfCareRecorded) -> bool:
        """Whether the same encounter was recorded with the same content under another id (a resend)."""
        encounter = event.data.encounter_id
        if encounter is None:
            return False
        if event.id in self._said_before:
            recorded = self._said_before.pop(event.id)
        else:
            async with self._database.acquire() as conn:
                recorded = bool(
                    await conn.fetchval(
                        SAME_ENCOUNTER_SAID_BEFORE,
                        event.patient_id,
                        encounter,
                        discharge_digest(event.data),
                        event.id,
                    )
                )
        earlier = self._in_batch.setdefault((event.patient_id, encounter), [])
        # Digests only for an encounter sent twice in one batch, which is rare.
        others = [other for other in earlier if other.id != event.id]
        in_batch = bool(others) and discharge_digest(event.data) in {discharge_digest(o.data) for o in others}
        earlier.append(event)
        return recorded or in_batch


async def medication_list(conn: asyncpg.Connection, query: GetMedicationList, actor: Actor) -> CommandReply:
    row = await conn.fetchrow(SELECT_LIST, query.patient_id)
    if row is None:
        return CommandReply(
            outcome="not_found", message="no medication list for this patient", resource_id=query.patient_id
        )
    found, _ = _read_list(row)
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
