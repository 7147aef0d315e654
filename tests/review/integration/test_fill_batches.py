"""A batch of pharmacy fills on real Postgres: the projection writes them in one statement, and review looks the
batch's members up in one query per table, each fill getting the context (and decision) it gets on its own."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from conftest import declare_as_owner
from support.events import mtm_enrolled, new_patient_id, warfarin_and_simvastatin_continued

from mtm.contracts import (
    MedicationDispensed,
    MedicationEntry,
)
from mtm.contracts.program import Dispense
from mtm.platform.db import create_pool
from mtm.platform.projection import SEARCH_PATH, Tx
from mtm.platform.service import Database
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review import application
from mtm.review.adapters import tasks
from mtm.review.adapters.fills import MemberFillRecords
from mtm.review.bootstrap import create_app
from mtm.review.drug_checks import build_drug_checkers
from mtm.review.settings import ReviewSettings

pytestmark = pytest.mark.integration
TODAY = datetime.now(UTC).date()


def dispensed(patient_id: str, ingredient: str, filled_on: date) -> MedicationDispensed:
    return MedicationDispensed.create(
        source="test",
        patient_id=patient_id,
        data=Dispense(
            dispense_id=f"rx-{uuid.uuid4().hex[:8]}",
            medication=MedicationEntry(text=f"{ingredient.title()} Oral Tablet"),
            ingredients=(ingredient,),
            days_supply=30,
            filled_on=filled_on,
            pharmacy_id="pharm-1",
        ),
    )


class Counted:
    """A connection that counts the statements sent through it (each row of an executemany is one)."""

    def __init__(self, conn: asyncpg.Connection, counts: list[int]) -> None:
        self._conn = conn
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._conn, name)
        if name not in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
            return found

        async def counted(*args: Any) -> Any:
            self._counts[0] += len(args[1]) if name == "executemany" else 1
            return await found(*args)

        return counted


class CountedDatabase(Database):
    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.bind(pool)
        self.counts = [0]

    @asynccontextmanager
    async def _acquire(self) -> Any:
        async with super().acquire() as conn:
            yield Counted(conn, self.counts)

    def acquire(self) -> Any:
        return self._acquire()


async def apply(pool: asyncpg.Pool, events: list) -> int:
    """Apply events to review's projection in one transaction; the statements it took."""
    counts = [0]
    async with pool.acquire() as conn, conn.transaction():
        await tasks.apply(Tx(Counted(conn, counts)), events)  # type: ignore[arg-type]
    return counts[0]


async def test_a_batch_of_fills_is_looked_up_and_written_as_one_at_a_time_would(
    clean_jetstream, settings_for, run_service
):
    await declare_as_owner(clean_jetstream, PATIENT_EVENTS)
    settings = settings_for(ReviewSettings)
    _, check = build_drug_checkers(settings.review_kb_path)
    member, other, stranger = new_patient_id(), new_patient_id(), new_patient_id()
    async with run_service(create_app(settings)) as app:
        pool = await create_pool(app.runtime.database_url, max_size=2, search_path=SEARCH_PATH)
        try:
            # The member takes warfarin and simvastatin and was reviewed for fluconazole; the other is not a member.
            seen = [
                warfarin_and_simvastatin_continued(member),
                warfarin_and_simvastatin_continued(other),
                mtm_enrolled(member),
                dispensed(member, "fluconazole", TODAY - timedelta(days=20)),
                dispensed(member, "metformin", TODAY - timedelta(days=450)),
                dispensed(other, "fluconazole", TODAY - timedelta(days=5)),
            ]
            await apply(pool, seen[:3])
            await apply(pool, seen[3:])
            reviewed = await application.review_fill(
                seen[3], check=check, records=MemberFillRecords(CountedDatabase(pool))
            )
            assert reviewed, "fluconazole on warfarin opens a review"
            await apply(pool, reviewed)
            async with pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO alert_overrides (override_id, task_id, patient_id, alert_key, rule_id, override,"
                    " overridden_at) VALUES ($1, $2, $3, 'k', 'r', $4, now())",
                    uuid.uuid4(),
                    reviewed[0].data.task_id,
                    member,
                    '{"severity": "high", "regimen": ["fluconazole", "warfarin"]}',
                )

            # Two fills of the member (the older one's window reaches the 450-day-old fill), one of each other
            # patient, and the member's first fill again (a duplicate).
            now = dispensed(member, "clarithromycin", TODAY)
            batch = [
                now,
                dispensed(member, "fluconazole", TODAY - timedelta(days=300)),
                dispensed(other, "clarithromycin", TODAY),
                dispensed(stranger, "fluconazole", TODAY),
                now,
            ]
            alone, together = CountedDatabase(pool), CountedDatabase(pool)
            one_by_one = [await MemberFillRecords(alone).fill_context(fill) for fill in batch]
            records = MemberFillRecords(together)
            await records.look_up(batch)
            looked_up = [await records.fill_context(fill) for fill in batch]
            assert looked_up == one_by_one
            assert [len(c.earlier_fills) for c in looked_up] == [1, 2, 1, 0, 1]
            assert looked_up[0].enrolled and looked_up[0].raised and looked_up[0].overrides
            assert not looked_up[2].enrolled and looked_up[2].reconciliation is not None
            assert looked_up[3].reconciliation is None
            assert alone.counts == [5 * len(batch)]
            # One query per table for the batch; the duplicate, its answer taken, is read on its own.
            assert together.counts == [5 + 5]

            decided = MemberFillRecords(together)
            await decided.look_up(batch)
            for fill in batch:
                expected = await application.review_fill(fill, check=check, records=MemberFillRecords(alone))
                got = await application.review_fill(fill, check=check, records=decided)
                assert [e.data for e in got] == [e.data for e in expected]

            # The projection writes the run of fills in one statement; the duplicate is kept once.
            assert await apply(pool, batch) == 1
            async with pool.acquire() as conn:
                kept = await conn.fetch(
                    "SELECT event_id, patient_id, filled_on FROM fills WHERE event_id = ANY($1)", [f.id for f in batch]
                )
            assert sorted((r["event_id"], r["patient_id"], r["filled_on"]) for r in kept) == sorted(
                {(f.id, f.patient_id, f.data.filled_on) for f in batch}
            )
        finally:
            await pool.close()
