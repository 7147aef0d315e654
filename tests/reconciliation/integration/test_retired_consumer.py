"""Upgrading from the version whose second consumer reconciled the discharges the intake recorded: its durable,
`reconciliation-transition-of-care`, is drained by the new version by itself, then deleted.

The version before is this service with that intake (recording, reconciling nothing) and the durable as it
declared it; the discharges the durable still holds are what it had not reconciled when the upgrade came.
"""

from __future__ import annotations

import asyncpg
import pytest
from nats.js.errors import NotFoundError
from support.jetstream import read_events, stream_messages, wait_for
from support.services import native_discharge

from mtm.contracts import EVENTS, MedicationsReconciled, TransitionOfCareRecorded
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_STREAM,
    DISCHARGE_INTAKE_SUBJECT,
    PATIENT_EVENTS_STREAM,
    PATIENT_PARTITIONS,
    dead_letter_stream,
    event_filter,
    partition_filters,
    patient_subject,
)
from mtm.platform.access import group_durable_name
from mtm.platform.projection import SEARCH_PATH
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.service import Database, Reaction, ServiceHandlers
from mtm.platform.streams import DISCHARGE_INTAKE, FILL_INTAKE, PATIENT_EVENTS, DurableSpec, ensure_durable
from mtm.reconciliation.adapters import intake, reconciliations
from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

pytestmark = pytest.mark.integration
RETIRED = "reconciliation-transition-of-care"


def version_before(settings: ReconciliationSettings):
    """The service as it was: its intake records each discharge on the log and leaves reconciling to the durable."""
    database = Database()
    recording_only = Reaction(
        durable="reconciliation-discharge-intake",
        stream=DISCHARGE_INTAKE_STREAM,
        filter_subjects=(DISCHARGE_INTAKE_SUBJECT,),
        parse=intake.discharge_parser(EVENTS),
        react=lambda transition: [transition],
        emits=(TransitionOfCareRecorded,),
    )
    definition = ServiceDefinition(
        name="reconciliation",
        handlers=ServiceHandlers(projection=reconciliations.RECONCILIATIONS, reactions=(recording_only,)),
        owned_streams=(PATIENT_EVENTS, DISCHARGE_INTAKE, FILL_INTAKE),
        database=database,
        keeps_keys=True,
    )
    return create_service_app(definition, settings)


def retired_durables(groups: int) -> list[tuple[str, tuple[str, ...]]]:
    """(name, filter subjects) of the durable as the version before declared it, one per group of partitions."""
    everything = (event_filter(TransitionOfCareRecorded),)
    if groups == 1:
        return [(RETIRED, everything)]
    return [
        (
            group_durable_name(RETIRED, g, groups),
            partition_filters(TransitionOfCareRecorded, range(g, PATIENT_PARTITIONS, groups)),
        )
        for g in range(groups)
    ]


async def declare_retired_durables(nc, settings: ReconciliationSettings) -> None:
    """As the version before declared them: every TransitionOfCareRecorded on the log (of its group), from the start."""
    for name, filters in retired_durables(settings.consumer_groups):
        spec = DurableSpec(
            stream=PATIENT_EVENTS_STREAM,
            durable=name,
            filter_subjects=filters,
            max_deliver=settings.max_deliver,
            ack_wait_s=settings.ack_wait_s,
            max_ack_pending=settings.batch_size * 4,
        )
        await ensure_durable(nc.jetstream(), spec)


async def send(nc, *discharges: TransitionOfCareRecorded) -> None:
    for discharge in discharges:
        await nc.jetstream().publish(
            DISCHARGE_INTAKE_SUBJECT, discharge.model_dump_json().encode(), headers={"Nats-Msg-Id": str(discharge.id)}
        )


async def on_log(nc, cls: type, at_least: int) -> list | None:
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(cls))
    return found if len(found) >= at_least else None


async def retired_durables_left(nc, groups: int = 1) -> list[str]:
    left = []
    for name, _ in retired_durables(groups):
        try:
            await nc.jetstream().consumer_info(PATIENT_EVENTS_STREAM, name)
        except NotFoundError:
            continue
        left.append(name)
    return left


async def reconciled_discharges(settings: ReconciliationSettings) -> list[str]:
    conn = await asyncpg.connect(settings.service_database_url(), server_settings={"search_path": SEARCH_PATH})
    try:
        rows = await conn.fetch("SELECT transition_event_id FROM reconciliations ORDER BY transition_event_id")
    finally:
        await conn.close()
    return [str(row["transition_event_id"]) for row in rows]


@pytest.mark.parametrize("groups", [1, 2])
async def test_an_upgrade_reconciles_what_the_retired_durable_held_once_and_deletes_it(
    clean_jetstream, settings_for, run_service, groups
):
    nc = clean_jetstream
    settings = settings_for(ReconciliationSettings, seal_events=True, consumer_groups=groups)
    # Reconciled by the intake of this version: on the log before the durable is (re)declared, so the durable holds
    # it too, as it holds every discharge the intake records while it exists.
    reconciled_already = native_discharge("p-reconciled-already")
    async with run_service(create_app(settings)):
        await send(nc, reconciled_already)
        await wait_for(lambda: on_log(nc, MedicationsReconciled, 1))
    await declare_retired_durables(nc, settings)
    waiting = [native_discharge(f"p-waiting-{n}") for n in range(3)]
    async with run_service(version_before(settings)):
        await send(nc, *waiting)
        await wait_for(lambda: on_log(nc, TransitionOfCareRecorded, 4))
    # A message on the durable's subjects that no version could ever read.
    unreadable = await nc.jetstream().publish(
        patient_subject("p-unreadable", TransitionOfCareRecorded.EVENT_NAME), b"not a discharge"
    )
    # The server counts a stored message into a consumer's pending after the publish is acknowledged (its consumers
    # are signalled from a queue), so the count is awaited rather than read once.
    assert await wait_for(lambda: held_by_retired_durables(nc, groups, (5, 0)))
    assert await reconciled_discharges(settings) == [str(reconciled_already.id)]

    app = create_app(settings)
    async with run_service(app):
        await wait_for(lambda: none_left(nc, groups), timeout_s=30)
        drained = app.runtime.processors[RETIRED]
        # Each waiting discharge reconciled once; the one reconciled before found so and left as it was.
        assert (drained.applied, drained.parked) == (3, 1)
        assert await reconciled_discharges(settings) == sorted(str(d.id) for d in (reconciled_already, *waiting))
        messages = await wait_for(lambda: on_log(nc, MedicationsReconciled, 4))
        published = await read_events(nc, MedicationsReconciled, messages)
        assert sorted(str(e.causation_id) for e in published) == sorted(
            str(d.id) for d in (reconciled_already, *waiting)
        )
        assert app.runtime.draining == set()
        assert app.runtime.readiness()[0] == ()
    letters = await stream_messages(nc, dead_letter_stream("reconciliation"))
    # Parked by the consumer (the same dead-letter subject whichever group read it).
    assert [(m.subject, m.headers["Nats-Msg-Id"]) for m in letters] == [
        (f"mtm.dlq.reconciliation.{RETIRED}", f"{RETIRED}:{PATIENT_EVENTS_STREAM}:{unreadable.seq}")
    ]


async def held_by_retired_durables(nc, groups: int, expected: tuple[int, int]) -> tuple[int, int] | None:
    """(pending, acknowledgement pending) summed over the retired durables, once it is `expected`."""
    held = [await nc.jetstream().consumer_info(PATIENT_EVENTS_STREAM, name) for name, _ in retired_durables(groups)]
    counts = (sum(i.num_pending for i in held), sum(i.num_ack_pending for i in held))
    return counts if counts == expected else None


async def none_left(nc, groups: int) -> bool:
    return not await retired_durables_left(nc, groups)


async def test_without_the_retired_durable_the_service_starts_and_never_creates_it(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    settings = settings_for(ReconciliationSettings)
    app = create_app(settings)
    discharge = native_discharge("p-after-upgrade")
    async with run_service(app):
        assert app.runtime.draining == set()
        assert RETIRED not in {key.consumer for key in app.runtime.group_keys}
        await send(nc, discharge)
        await wait_for(lambda: on_log(nc, MedicationsReconciled, 1))
        assert app.runtime.readiness()[0] == ()
    assert await retired_durables_left(nc) == []
    assert await reconciled_discharges(settings) == [str(discharge.id)]
