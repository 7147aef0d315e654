"""A recorded discharge is stored and published as it always was: the digest of its data, and its whole JSON.

The projection serializes a discharge's data once, for its digest, and builds the JSON the outbox publishes
around it; both must be byte for byte what serializing the discharge gives.
"""

from __future__ import annotations

import asyncpg
import pytest
from support.database import fresh_connection
from support.services import native_discharge

from mtm.contracts import MedicationEntry, TransitionOfCareRecorded
from mtm.platform.db import apply_schema_migrations
from mtm.platform.projection import Tx, UnitOfWork, platform_projection_migrations
from mtm.reconciliation.adapters.reconciliations import RECONCILIATIONS
from mtm.reconciliation.application import reconcile_now
from mtm.reconciliation.domain.identity import discharge_digest

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(infra):
    async with fresh_connection(infra, "t_recorded") as connection:
        async with connection.transaction():
            await apply_schema_migrations(
                connection,
                "recorded",
                [("platform", platform_projection_migrations()), ("reconciliation", RECONCILIATIONS.migrations)],
            )
        await connection.execute("SET search_path TO recorded, public")
        yield connection


def discharges() -> list[TransitionOfCareRecorded]:
    plain = native_discharge("p-plain")
    accented = native_discharge("p-accented")
    extra = MedicationEntry(text='Métoprolol « succinate » 25 MG\tER \\ "Oral" Tablet')
    data = accented.data.model_copy(
        update={"encounter_id": None, "discharge_medications": (*accented.data.discharge_medications, extra)}
    )
    caused = native_discharge("p-caused")
    return [
        plain,
        accented.model_copy(update={"data": data}),
        caused.model_copy(update={"causation_id": plain.id}),
    ]


async def test_the_stored_digest_and_the_published_json_are_the_discharges_own(conn: asyncpg.Connection) -> None:
    events = discharges()
    async with conn.transaction():
        tx = Tx(conn)
        await RECONCILIATIONS.apply(tx, [e for t in events for e in (t, *reconcile_now(t))])
        stored = dict(await conn.fetch("SELECT event_id, digest FROM transitions"))
    assert stored == {t.id: discharge_digest(t.data) for t in events}
    for event in events:
        assert tx.body(event) == event.model_dump_json()


async def test_a_discharge_recorded_with_its_reconciliation_is_enqueued_as_it_serializes(
    conn: asyncpg.Connection,
) -> None:
    # The outbox is in the service's own schema; the projection's tables are beside it.
    await conn.execute("CREATE TABLE outbox (id bigserial, subject text, msg_id text, payload bytea, headers jsonb)")
    events = discharges()
    caused = [e for t in events for e in (t, *reconcile_now(t))]
    async with conn.transaction():
        uow = UnitOfWork(conn, RECONCILIATIONS)
        await uow.begin()
        await uow.record(caused)
    enqueued = {row["msg_id"]: bytes(row["payload"]) for row in await conn.fetch("SELECT msg_id, payload FROM outbox")}
    assert enqueued == {str(e.id): e.model_dump_json().encode() for e in caused}
