"""Which members the evaluation timer takes: new inputs, but a member evaluated moments ago waits a little."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from support.database import fresh_connection
from support.events import medications_reconciled

from mtm.contracts import MedicationDispensed, MedicationEntry
from mtm.contracts.program import Dispense
from mtm.platform.db import apply_schema_migrations
from mtm.platform.projection import Tx, platform_projection_migrations
from mtm.program.adapters.program import PROGRAM, REEVALUATE_AFTER, due_members
from mtm.program.application import evaluator
from mtm.program.domain.targeting import Plan
from mtm.program.tables import adherence_tables, targeting_tables

pytestmark = pytest.mark.integration

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def conn(infra):
    async with fresh_connection(infra, "t_program_due") as connection:
        async with connection.transaction():
            await apply_schema_migrations(
                connection, "due", [("platform", platform_projection_migrations()), ("program", PROGRAM.migrations)]
            )
        await connection.execute("SET search_path TO due, public")
        yield connection


def fill(patient_id: str, dispense_id: str, on: datetime) -> MedicationDispensed:
    return MedicationDispensed.create(
        source="test/pharmacy",
        patient_id=patient_id,
        data=Dispense(
            dispense_id=dispense_id,
            medication=MedicationEntry(text="atorvastatin 20 mg tablet"),
            ingredients=("atorvastatin",),
            days_supply=30,
            filled_on=date(2025, 6, 1),
        ),
        time=on,
    )


async def apply(conn: asyncpg.Connection, events: list) -> None:
    async with conn.transaction():
        await PROGRAM.apply(Tx(conn), events)


async def due(conn: asyncpg.Connection, now: datetime) -> list[str]:
    return [member.patient_id for member in await due_members(conn, now, 100)]


async def test_a_member_evaluated_moments_ago_waits_before_new_inputs_are_evaluated(conn) -> None:
    await apply(conn, [medications_reconciled("p-1", omitted="metformin")])
    assert await due(conn, NOW) == ["p-1"]

    fire = evaluator(Plan(), targeting_tables(), adherence_tables())
    (member,) = await due_members(conn, NOW, 100)
    await apply(conn, fire(member, NOW))
    assert await due(conn, NOW) == []

    # A fill a second later, and a new member: the new member is due at once, the member just evaluated is not.
    await apply(conn, [fill("p-1", "rx-1", NOW + timedelta(seconds=1)), fill("p-2", "rx-2", NOW)])
    assert await due(conn, NOW + timedelta(seconds=1)) == ["p-2"]
    # Once the while has passed since its determination, the fill is taken into account.
    assert await due(conn, NOW + REEVALUATE_AFTER) == ["p-1", "p-2"]
