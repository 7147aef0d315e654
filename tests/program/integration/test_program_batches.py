"""A batch applied at once leaves the program's members as applying its events one by one does."""

from __future__ import annotations

from datetime import date

import asyncpg
import pytest
from support.database import fresh_connection
from support.events import medications_reconciled

from mtm.contracts import MedicationDispensed, MedicationEntry, MedicationsReconciled
from mtm.contracts.program import Dispense
from mtm.platform.db import apply_schema_migrations
from mtm.platform.projection import Tx, platform_projection_migrations
from mtm.program.adapters.program import PROGRAM

pytestmark = pytest.mark.integration

MEMBER = "SELECT patient_id, birth_date, conditions::text, medications::text, inputs_seen, last_input FROM members"
FILLS = """
SELECT patient_id, dispense_id, drug_key, ingredients, filled_on, days_supply, total_cost FROM fills
ORDER BY patient_id, dispense_id
"""


def discharge(patient_id: str, birth_date: date | None, omitted: str) -> MedicationsReconciled:
    event = medications_reconciled(patient_id, omitted=omitted)
    patient = event.data.patient.model_copy(update={"birth_date": birth_date})
    return event.model_copy(update={"data": event.data.model_copy(update={"patient": patient})})


@pytest.fixture
async def conn(infra):
    async with fresh_connection(infra, "t_program") as connection:
        yield connection


async def members_after(conn: asyncpg.Connection, schema: str, batches: list[list[MedicationsReconciled]]) -> list:
    async with conn.transaction():
        await apply_schema_migrations(
            conn, schema, [("platform", platform_projection_migrations()), ("program", PROGRAM.migrations)]
        )
    await conn.execute(f"SET search_path TO {schema}, public")
    for batch in batches:
        async with conn.transaction():
            await PROGRAM.apply(Tx(conn), batch)
    return [dict(row) for row in await conn.fetch(MEMBER + " ORDER BY patient_id")]


async def test_discharges_of_one_patient_in_one_batch_count_each_and_keep_the_latest(conn):
    events = [
        discharge("p-1", date(1950, 3, 1), "atorvastatin"),
        discharge("p-2", None, "lisinopril"),
        discharge("p-1", None, "metformin"),
        discharge("p-2", date(1961, 7, 9), "warfarin"),
        discharge("p-1", None, "amlodipine"),
    ]
    one_by_one = await members_after(conn, "one_by_one", [[event] for event in events])
    at_once = await members_after(conn, "at_once", [events])
    assert at_once == one_by_one
    assert [(m["patient_id"], m["inputs_seen"], m["birth_date"]) for m in at_once] == [
        ("p-1", 3, date(1950, 3, 1)),
        ("p-2", 2, date(1961, 7, 9)),
    ]


def fill(patient_id: str, dispense_id: str, ingredients: tuple[str, ...], cost: float | None) -> MedicationDispensed:
    return MedicationDispensed.create(
        source="test/pharmacy",
        patient_id=patient_id,
        data=Dispense(
            dispense_id=dispense_id,
            medication=MedicationEntry(text=" / ".join(ingredients) or "Unknown compound"),
            ingredients=ingredients,
            days_supply=30,
            filled_on=date(2025, 3, len(dispense_id)),
            total_cost=cost,
        ),
    )


async def test_fills_in_one_batch_leave_the_rows_applying_them_one_by_one_leaves(conn):
    events = [
        fill("p-1", "rx-1", ("atorvastatin",), 12.5),
        discharge("p-2", date(1961, 7, 9), "warfarin"),
        fill("p-2", "rx-22", ("sacubitril", "valsartan"), None),
        fill("p-1", "rx-333", (), None),
        # The same dispense sent again under another event id: counted, its first row kept.
        fill("p-1", "rx-1", ("atorvastatin",), 99.0),
        discharge("p-1", None, "metformin"),
        fill("p-3", "rx-4444", ("valsartan", "hydrochlorothiazide"), 3.0),
    ]
    one_by_one = await members_after(conn, "one_by_one", [[event] for event in events])
    fills_one_by_one = await conn.fetch(FILLS)
    at_once = await members_after(conn, "at_once", [events])
    fills_at_once = await conn.fetch(FILLS)
    assert at_once == one_by_one
    assert [dict(row) for row in fills_at_once] == [dict(row) for row in fills_one_by_one]
    assert [(m["patient_id"], m["inputs_seen"], m["last_input"]) for m in at_once] == [
        ("p-1", 4, "discharge"),
        ("p-2", 2, "fill"),
        ("p-3", 1, "fill"),
    ]
    assert [(f["dispense_id"], f["ingredients"], f["total_cost"]) for f in fills_at_once] == [
        ("rx-1", ["atorvastatin"], 12.5),
        ("rx-333", [], None),
        ("rx-22", ["sacubitril", "valsartan"], None),
        ("rx-4444", ["valsartan", "hydrochlorothiazide"], 3.0),
    ]
