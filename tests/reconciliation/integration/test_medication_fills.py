"""Fills kept as rows beside the medication list: read back, the list is what the domain folds from the same events,
however they are batched, live or rebuilt; a list stored with its fills in its document still reads right."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from support.database import fresh_connection
from support.events import medications_reconciled, warfarin_and_simvastatin_continued

from mtm.contracts import MedicationDispensed, MedicationEntry, MedicationsReconciled
from mtm.contracts.program import Dispense
from mtm.platform.db import apply_schema_migrations
from mtm.platform.projection import Kept, Tx, platform_projection_migrations
from mtm.reconciliation.adapters import reconciliations
from mtm.reconciliation.adapters.reconciliations import RECONCILIATIONS, SELECT_LIST, _read_list, write_lists
from mtm.reconciliation.domain import FILL_HISTORY, MedicationList, apply_fill, apply_to_medication_list

pytestmark = pytest.mark.integration

TABLES = ("medication_lists", "medication_list_entries", "medication_fills")
START = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
async def conn(infra):
    async with fresh_connection(infra, "t_fills") as connection:
        yield connection


def fill(
    patient_id: str, dispense_id: str, ingredients: tuple[str, ...], day: int, text: str = ""
) -> MedicationDispensed:
    filled_on = date(2025, 1, 1) + timedelta(days=day)
    return MedicationDispensed.create(
        source="test/pharmacy",
        patient_id=patient_id,
        data=Dispense(
            dispense_id=dispense_id,
            medication=MedicationEntry(text=text or " / ".join(ingredients)),
            ingredients=ingredients,
            days_supply=30,
            quantity=30.5,
            filled_on=filled_on,
            pharmacy_id="ph-1",
        ),
        time=datetime.combine(filled_on, datetime.min.time(), UTC),
    )


def two_warfarins(patient_id: str) -> MedicationsReconciled:
    """A discharge keeping two entries of one ingredient (two strengths): a fill joins the first of them."""
    event = warfarin_and_simvastatin_continued(patient_id)
    items = event.data.items
    low = items[0].model_copy(update={"discharge": items[0].discharge.model_copy(update={"text": "Warfarin 1 MG"})})
    data = event.data.model_copy(update={"items": (*items, low), "transition_event_id": uuid.uuid4()})
    return event.model_copy(update={"id": uuid.uuid4(), "data": data, "time": START + timedelta(days=200)})


def events() -> list:
    """Three patients: refills past the history kept, a fill sent twice, a new medication, an unresolved one, and
    reconciliations between fills that carry the fills over, drop an entry and split one ingredient in two."""
    out: list = [warfarin_and_simvastatin_continued("p-1").model_copy(update={"time": START})]
    for n in range(FILL_HISTORY + 4):
        out.append(fill("p-1", f"w-{n:02d}", ("warfarin",), 7 * n))
        out.append(fill("p-2", f"s-{n:02d}", ("simvastatin",), 30 * n))
    out += [
        fill("p-1", "w-20", ("warfarin",), 400),  # the same dispense again (another event id): nothing changes
        fill("p-1", "m-1", ("metformin",), 5),
        fill("p-1", "x-1", (), 6, text="Compounded cream"),
        fill("p-1", "x-2", (), 36, text="Compounded cream"),
        fill("p-1", "m-2", ("metformin",), 35),
        two_warfarins("p-1"),
        fill("p-1", "w-99", ("warfarin",), 300),
        medications_reconciled("p-2", omitted="simvastatin").model_copy(update={"time": START + timedelta(days=900)}),
        fill("p-2", "s-99", ("simvastatin",), 901),
        fill("p-2", "s-99", ("simvastatin",), 901),
        # A list made of fills alone: its entries written one by one live, whole in a rebuild; the latest fill is
        # not the last to arrive.
        fill("p-3", "a-1", ("amlodipine",), 1),
        fill("p-3", "a-2", ("amlodipine",), 31),
        fill("p-3", "x-1", (), 2, text="Compounded cream"),
    ]
    # A fill older than the latest FILL_HISTORY, sent twice later: each copy joins and is let go at once, and each
    # moves the list's time, whether the two come in one batch or two.
    for n in range(FILL_HISTORY + 2):
        out.append(fill("p-4", f"a-{n:02d}", ("atorvastatin",), 30 * n))
    for day in (1000, 1001):
        resent = fill("p-4", "a-00", ("atorvastatin",), 0)
        out.append(resent.model_copy(update={"id": uuid.uuid4(), "time": START + timedelta(days=day)}))
    return out


def folded(events: list) -> dict[str, MedicationList]:
    lists: dict[str, MedicationList] = {}
    for e in events:
        if isinstance(e, MedicationsReconciled):
            lists[e.patient_id] = apply_to_medication_list(
                lists.get(e.patient_id), e.data, event_id=e.id, recorded_at=e.time
            )
        else:
            lists[e.patient_id] = apply_fill(
                lists.get(e.patient_id), e.patient_id, e.data, event_id=e.id, recorded_at=e.time
            )
    return lists


async def migrated(conn: asyncpg.Connection, schema: str) -> None:
    async with conn.transaction():
        await apply_schema_migrations(
            conn,
            schema,
            [("platform", platform_projection_migrations()), ("reconciliation", RECONCILIATIONS.migrations)],
        )
    await conn.execute(f"SET search_path TO {schema}, public")


async def applied(conn: asyncpg.Connection, schema: str, batches: list[list], *, rebuild: bool = False) -> dict:
    await migrated(conn, schema)
    kept = Kept(capacity=1) if rebuild else None
    for batch in batches:
        async with conn.transaction():
            await RECONCILIATIONS.apply(Tx(conn, kept), batch)
    if kept is not None:
        async with conn.transaction():
            await write_lists(Tx(conn, kept), kept.take_unwritten())
    return await rows(conn)


async def rows(conn: asyncpg.Connection) -> dict[str, list[str]]:
    return {t: sorted(r[0] for r in await conn.fetch(f"SELECT row_to_json(t)::text FROM {t} t")) for t in TABLES}


async def stored(conn: asyncpg.Connection, patient_id: str) -> MedicationList:
    found, _ = _read_list(await conn.fetchrow(SELECT_LIST, patient_id))
    return found


async def test_lists_read_back_as_the_domain_folds_them_batched_live_or_rebuilt(conn):
    log = events()
    expected = folded(log)
    one_by_one = await applied(conn, "one_by_one", [[e] for e in log])
    for patient, ml in expected.items():
        assert await stored(conn, patient) == ml, patient
    at_once = await applied(conn, "at_once", [log])
    in_fives = await applied(conn, "in_fives", [log[n : n + 5] for n in range(0, len(log), 5)])
    rebuilt = await applied(conn, "rebuilt", [log[n : n + 3] for n in range(0, len(log), 3)], rebuild=True)
    assert at_once == one_by_one and in_fives == one_by_one and rebuilt == one_by_one
    for patient, ml in expected.items():
        assert await stored(conn, patient) == ml, patient

    p1 = {(e.match_key, e.medication.text): e for e in expected["p-1"].entries}
    # The latest 24, oldest first, carried over to the entry the discharge kept; a later fill joins the first
    # warfarin entry of the list, which sorts first.
    warfarin = p1[(("warfarin",), "Warfarin 5 MG Oral Tablet")]
    assert [f.dispense_id for f in warfarin.fills] == [f"w-{n:02d}" for n in range(4, FILL_HISTORY + 4)]
    assert [f.dispense_id for f in p1[(("warfarin",), "Warfarin 1 MG")].fills] == ["w-99"]
    # The second discharge left metformin and the cream off the list: their fills went with them.
    assert sorted(p1) == [
        (("simvastatin",), "Simvastatin 20 MG Oral Tablet"),
        (("warfarin",), "Warfarin 1 MG"),
        (("warfarin",), "Warfarin 5 MG Oral Tablet"),
    ]
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM medication_fills WHERE patient_id = 'p-1' AND entry_key <> 'warfarin'"
        )
        == 0
    )


async def test_a_refill_writes_a_row_and_leaves_the_document_and_a_fill_seen_before_changes_nothing(conn, monkeypatch):
    log = [
        warfarin_and_simvastatin_continued("p-1").model_copy(update={"time": START}),
        fill("p-1", "w-1", ("warfarin",), 3),
    ]
    await applied(conn, "seen", [log])
    before = await stored(conn, "p-1")
    entries = await conn.fetch("SELECT entry_key, entry_slot, entry::text FROM medication_list_entries")

    def not_read(row):
        raise AssertionError("a refill read the list's document")

    monkeypatch.setattr(reconciliations, "_read_list", not_read)
    later_copy = fill("p-1", "w-1", ("warfarin",), 3).model_copy(update={"time": START + timedelta(days=99)})
    async with conn.transaction():
        await RECONCILIATIONS.apply(Tx(conn), [later_copy])
    refill = fill("p-1", "w-2", ("warfarin",), 33)
    async with conn.transaction():
        await RECONCILIATIONS.apply(Tx(conn), [refill])
    assert await conn.fetch("SELECT entry_key, entry_slot, entry::text FROM medication_list_entries") == entries
    new = fill("p-1", "m-1", ("metformin",), 20)
    async with conn.transaction():
        await RECONCILIATIONS.apply(Tx(conn), [new])
    monkeypatch.undo()

    assert await conn.fetchval("SELECT last_event_id FROM medication_lists") == new.id
    assert await stored(conn, "p-1") == folded([*log, later_copy, refill, new])["p-1"]
    assert (await stored(conn, "p-1")).updated_at == refill.time
    after_copy = folded([*log, later_copy])["p-1"]
    assert after_copy == before


async def test_a_list_stored_with_its_fills_in_its_document_reads_right_and_moves_them_on_the_next_fill(conn, tmp_path):
    """Lists written before migration 003 hold their entries and fills in their document; the next change of each
    moves them to rows."""
    log = [e for e in events() if e.patient_id in ("p-1", "p-2")]  # their last events change their lists
    # The schema as it was before migration 003, a list written then, and the migration applied over it.
    for sql in RECONCILIATIONS.migrations.iterdir():
        if sql.name.startswith(("001_", "002_")):
            (tmp_path / sql.name).write_text(sql.read_text())
    async with conn.transaction():
        await apply_schema_migrations(
            conn, "legacy", [("platform", platform_projection_migrations()), ("reconciliation", tmp_path)]
        )
    await conn.execute("SET search_path TO legacy, public")
    old = folded(log[:-4])
    for patient, ml in old.items():
        await conn.execute(
            "INSERT INTO medication_lists (patient_id, last_event_id, medication_list, updated_at)"
            " VALUES ($1, $2, $3, $4)",
            patient,
            uuid.uuid4(),
            ml.model_dump_json(exclude_defaults=True),
            ml.updated_at,
        )
    await migrated(conn, "legacy")
    for patient, ml in old.items():
        assert await stored(conn, patient) == ml
    async with conn.transaction():
        await RECONCILIATIONS.apply(Tx(conn), log[-4:])
    for patient, ml in folded(log).items():
        assert await stored(conn, patient) == ml
    assert await conn.fetchval("SELECT count(*) FROM medication_lists WHERE medication_list IS NOT NULL") == 0
    assert await conn.fetchval("SELECT count(*) FROM medication_fills WHERE patient_id = 'p-1'") > FILL_HISTORY


async def test_erasing_a_patient_deletes_their_entries_and_fills(conn):
    await applied(conn, "erased", [events()])
    for statement in RECONCILIATIONS.erase:
        await conn.execute(statement, "p-1")
    for table in TABLES:
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE patient_id = 'p-1'") == 0, table
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE patient_id = 'p-2'") > 0, table
