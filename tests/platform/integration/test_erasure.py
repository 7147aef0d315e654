"""Erasure on an append-only log: the patient's key is destroyed, every service forgets them, replays stay blind.

The five services run with events sealed under each patient's key. One patient is erased by an admin; every
projection must lose every row about them (and keep every other patient's), a rebuild from the log must bring
none of them back, and the log itself must hold no clear text of theirs.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from support import actors
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge
from support.stack import dump, quiet, rebuild, request, service_apps

from mtm.contracts import (
    ClaimReviewTask,
    CompleteReviewTask,
    ListReviewTasks,
    MedicationEntry,
    Recommendation,
    ReviewTaskCreated,
)
from mtm.contracts.admin import ErasePatient
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    ERASE_PATIENT,
    LIST_REVIEW_TASKS,
    PATIENT_EVENTS_STREAM,
    event_filter,
)
from mtm.platform.crypto import ErasedPatient, KeyRing
from mtm.platform.keys import nats_key_source
from mtm.platform.reading import EventReader

pytestmark = pytest.mark.integration
MARKER = "Zorbazeprine 12 MG Oral Tablet"  # a medication nobody takes: easy to find anywhere it leaks


async def rows_about(app, patient_id: str) -> list[str]:
    """Every row of every projection table that mentions the patient."""
    runtime = app.runtime
    conn = await asyncpg.connect(runtime.database_url)
    try:
        found = []
        for table in runtime.definition.handlers.projection.tables:
            rows = await conn.fetch(f"SELECT row_to_json(t)::text FROM projection.{table} t")
            found += [f"{table}: {row[0][:80]}" for row in rows if patient_id in row[0]]
        return found
    finally:
        await conn.close()


async def test_an_erased_patient_is_forgotten_everywhere_and_replays_see_nothing(
    clean_jetstream,
    settings_for,
    run_service,
    receiver,
    smtp,
    tmp_path,
):
    nc = clean_jetstream
    apps = service_apps(settings_for, receiver, smtp, tmp_path)
    erased, kept = f"p-erase-{uuid.uuid4().hex[:8]}", f"p-keep-{uuid.uuid4().hex[:8]}"
    async with (
        run_service(apps["reconciliation"]),
        run_service(apps["review"]),
        run_service(apps["referral"]),
        run_service(apps["notify"]),
        run_service(apps["program"]),
    ):
        for patient in (erased, kept):
            discharge = native_discharge(patient)
            extra = MedicationEntry(text=MARKER)
            data = discharge.data.model_copy(
                update={"discharge_medications": (*discharge.data.discharge_medications, extra)}
            )
            discharge = discharge.model_copy(update={"data": data})
            await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, discharge.model_dump_json().encode())

        async def tasks():
            reply = await request(nc, LIST_REVIEW_TASKS, ListReviewTasks(), actors.pharmacist("rph-1"))
            return reply.data if len(reply.data) >= 2 else None

        for task in await wait_for(tasks, timeout_s=30):
            task_id = uuid.UUID(task["task_id"])
            assert (
                await request(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), actors.pharmacist("rph-1"))
            ).ok
            recommendation = Recommendation(recommendation_id=uuid.uuid4(), text="Stop it", needs_prescriber=True)
            completion = CompleteReviewTask(task_id=task_id, recommendations=(recommendation,))
            assert (await request(nc, COMPLETE_REVIEW_TASK, completion, actors.pharmacist("rph-1"))).ok
        await wait_for(lambda: len(receiver.received) >= 2, timeout_s=30)
        await wait_for(lambda: quiet(apps, nc), timeout_s=30)
        assert all(await asyncio.gather(*(rows_about(app, erased) for app in apps.values())))
        kept_before = {name: await rows_about(app, kept) for name, app in apps.items()}

        log = await stream_messages(nc, PATIENT_EVENTS_STREAM)
        assert log and not any(MARKER.encode() in m.data for m in log), "the log holds clear text of a patient"

        command = ErasePatient(patient_id=erased, reason="request of the patient")
        assert (await request(nc, ERASE_PATIENT, command, actors.pharmacist("rph-1"))).outcome == "forbidden"
        assert (await request(nc, ERASE_PATIENT, command)).ok  # the default identity here is an admin

        async def forgotten():
            return not any(await asyncio.gather(*(rows_about(app, erased) for app in apps.values())))

        await wait_for(forgotten, timeout_s=30)
        await wait_for(lambda: quiet(apps, nc), timeout_s=30)
        # Rows about the patient that do not name them (keyed by a task, a recommendation) went too: the tables
        # after the erasure are exactly what the log without the patient gives.
        erased_live = {name: await dump(app) for name, app in apps.items()}
        for name in apps:
            assert (await rebuild(nc, name)).phase == "swapped"
        assert await forgotten(), "a rebuild brought an erased patient back"
        for name, app in apps.items():
            rebuilt = await dump(app)
            for table, rows in rebuilt.items():
                if table != "applied_events":
                    assert rows == erased_live[name][table], f"{name}.{table}: the erasure left rows behind"
        assert {name: await rows_about(app, kept) for name, app in apps.items()} == kept_before

        # Anyone replaying the log from now on (a new service, a rebuild) gets nothing of theirs.
        reader = EventReader(apps["review"].runtime.definition.registry, KeyRing(nats_key_source(nc)))
        theirs = [
            m
            for m in await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
            if erased in m.subject
        ]
        assert theirs
        for message in theirs:
            with pytest.raises(ErasedPatient):
                await reader.read(message.subject, message.data)


async def test_a_service_opens_a_new_patients_events_with_the_announced_key_without_asking(
    clean_jetstream, settings_for, run_service
):
    """The keeper announces each key it makes; a reader keeps it, so the patient's first events need no request
    (here no keeper runs at all: a request would go unanswered and hold the batch)."""
    from conftest import declare_as_owner
    from support.events import medications_reconciled, new_patient_id

    from mtm.contracts import ReviewTaskCreated
    from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, PATIENT_KEYS, PATIENT_KEYS_MADE, event_subject
    from mtm.platform.crypto import PatientKey, seal
    from mtm.platform.keys import key_reply
    from mtm.platform.streams import PATIENT_EVENTS
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    asked: list[bytes] = []

    async def on_request(msg) -> None:
        asked.append(msg.data)

    await nc.subscribe(PATIENT_KEYS, cb=on_request)
    patient = new_patient_id()
    key = PatientKey.new()
    reconciled = medications_reconciled(patient)
    async with run_service(review_app(settings_for(ReviewSettings), checker=lambda rec: ([], "routine"))):
        await nc.publish(PATIENT_KEYS_MADE, key_reply({patient: key}, set(), ()).model_dump_json().encode())
        await nc.flush()
        await asyncio.sleep(0.5)  # the announcement is heard before the event it precedes
        body = seal(reconciled.model_dump_json().encode(), reconciled.id, key)
        await nc.jetstream().publish(event_subject(reconciled), body, headers={"Nats-Msg-Id": str(reconciled.id)})

        async def task_created():
            found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
            return found or None

        await wait_for(task_created, timeout_s=20)
    assert asked == []
