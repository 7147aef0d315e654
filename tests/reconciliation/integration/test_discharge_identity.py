"""When two discharges are one: a reused id is refused with its reason, a resent encounter is reconciled once.

Regression tests: a second discharge reusing another's event id used to vanish as a "resend"; the same encounter
sent again under a new id used to open a second review.
"""

from __future__ import annotations

import uuid

import pytest
from conftest import declare_as_owner
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge

from mtm.contracts import DeadLetter, MedicationEntry, MedicationsReconciled, TransitionOfCareRecorded
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, PATIENT_EVENTS_STREAM, dead_letter_stream, event_filter
from mtm.platform.streams import DISCHARGE_INTAKE, PATIENT_EVENTS
from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

pytestmark = pytest.mark.integration


def with_id(event: TransitionOfCareRecorded, event_id: uuid.UUID) -> TransitionOfCareRecorded:
    return event.model_copy(update={"id": event_id, "correlation_id": event_id})


def with_extra_medication(event: TransitionOfCareRecorded) -> TransitionOfCareRecorded:
    extra = MedicationEntry(text="Pantoprazole 40 MG Delayed Release Oral Tablet")
    data = event.data.model_copy(update={"discharge_medications": (*event.data.discharge_medications, extra)})
    return event.model_copy(update={"data": data})


async def publish(nc, event: TransitionOfCareRecorded) -> None:
    # Each with its own Nats-Msg-Id, as different senders would: the server's deduplication does not hide them.
    await nc.jetstream().publish(DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode())


async def reconciled(nc) -> list[MedicationsReconciled]:
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationsReconciled))
    return [MedicationsReconciled.model_validate_json(m.data) for m in found]


async def parked(nc, n: int) -> list[DeadLetter] | None:
    found = await stream_messages(nc, dead_letter_stream("reconciliation"))
    return [DeadLetter.model_validate_json(m.data) for m in found] if len(found) >= n else None


async def test_a_reused_id_is_refused_and_a_resent_encounter_is_reconciled_once(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    first = native_discharge("p-first")
    other_patient = with_id(native_discharge("p-other"), first.id)
    other_content = with_extra_medication(first)
    resent_same_id = first
    resent_new_id = with_id(first, uuid.uuid4())
    correction = with_id(with_extra_medication(first), uuid.uuid4())
    control = native_discharge("p-control")
    async with run_service(create_app(settings_for(ReconciliationSettings))):
        await publish(nc, first)
        await wait_for(lambda: _count(nc, 1))
        for event in (other_patient, other_content, resent_same_id, resent_new_id, correction, control):
            await publish(nc, event)
        letters = await wait_for(lambda: parked(nc, 2))
        found = await wait_for(lambda: _count(nc, 3))
    by_patient = sorted((e.patient_id, str(e.causation_id)) for e in found)
    assert by_patient == sorted(
        [("p-first", str(first.id)), ("p-first", str(correction.id)), ("p-control", str(control.id))]
    ), "a resend (same id or same encounter and content) is reconciled once, a correction again"
    reasons = [letter.reason for letter in letters]
    assert any("another patient" in r for r in reasons) and any("different discharge" in r for r in reasons), reasons


async def _count(nc, n: int):
    found = await reconciled(nc)
    return found if len(found) >= n else None


async def test_a_resend_in_the_same_batch_as_its_first_sending_is_reconciled_once(
    clean_jetstream, settings_for, run_service
):
    """Recorded and reconciled in one step, a batch's discharges are not in the projection yet when the next one of
    the batch is decided: the intake remembers the encounters it reconciled earlier in the batch."""
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS, DISCHARGE_INTAKE)
    first = native_discharge("p-batch")
    resent_new_id = with_id(first, uuid.uuid4())
    correction = with_id(with_extra_medication(first), uuid.uuid4())
    control = native_discharge("p-batch-control")
    # All on the intake before the service starts: its first fetch takes them in one batch.
    for event in (first, resent_new_id, correction, control):
        await publish(nc, event)
    async with run_service(create_app(settings_for(ReconciliationSettings))):
        # The control's reconciliation is the batch's last outbox row: the relay sends rows in order.
        found = await wait_for(lambda: _with_last(nc, control))
    by_patient = sorted((e.patient_id, str(e.causation_id)) for e in found)
    assert by_patient == sorted(
        [("p-batch", str(first.id)), ("p-batch", str(correction.id)), ("p-batch-control", str(control.id))]
    )


async def _with_last(nc, last: TransitionOfCareRecorded):
    found = await reconciled(nc)
    return found if any(e.causation_id == last.id for e in found) else None
