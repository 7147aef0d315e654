"""Hostile and oversized input on real NATS and Postgres: each bad message parked with its reason, neighbours flow.

Regression tests for what once stopped or lost data: a deeply nested body or a malformed FHIR bundle that took
its batch (and valid neighbours) with it, a body too large for its own dead letter, a discharge that would have
made an event too large to publish, a completion note of a megabyte, a task list too long for one reply.
"""

from __future__ import annotations

import json
import uuid

import pytest
from support import actors
from support.events import medications_reconciled, new_patient_id, publish_event
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge

from mtm.contracts import (
    CommandReply,
    CompleteReviewTask,
    DeadLetter,
    ListReviewTasks,
    MedicationsReconciled,
    ReviewTaskCreated,
)
from mtm.contracts.dead_letter import dead_letter_bucket
from mtm.contracts.limits import MAX_MEDICATIONS, MAX_NOTE
from mtm.contracts.subjects import (
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    LIST_REVIEW_TASKS,
    PATIENT_EVENTS_STREAM,
    dead_letter_stream,
    event_filter,
)

pytestmark = pytest.mark.integration


async def letters(nc, service: str, n: int) -> list[DeadLetter] | None:
    found = await stream_messages(nc, dead_letter_stream(service))
    return [DeadLetter.model_validate_json(m.data) for m in found] if len(found) >= n else None


async def reconciled(nc, n: int) -> list[MedicationsReconciled] | None:
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationsReconciled))
    return [MedicationsReconciled.model_validate_json(m.data) for m in found] if len(found) >= n else None


def fhir_bundle(patient_id: str, **patch) -> bytes:
    from mtm.cli.demo import fhir_discharge

    body = json.loads(fhir_discharge()[0])
    for entry in body["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["id"] = patient_id
    body.update(patch)
    return json.dumps(body).replace('"Patient/', '"Patient/').encode()


async def test_poison_in_a_batch_is_parked_and_every_valid_neighbour_flows(clean_jetstream, settings_for, run_service):
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    nc = clean_jetstream
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    deep_object = ('{"a":' * 5_000 + "1" + "}" * 5_000).encode()
    contained = json.loads(fhir_bundle("p-contained"))
    contained["entry"][0]["resource"]["contained"] = 5
    control = b'{"resourceType": "Bundle", "type": "collection", "id": "a\\u0000b\\nc", "entry": [{"resource": 7}]}'
    too_many = native_discharge(new_patient_id()).model_dump(mode="json")
    too_many["data"]["home_medications"] = [{"text": "Aspirin 81 MG Oral Tablet"}] * (MAX_MEDICATIONS + 1)
    too_big = b'{"padding": "' + b"x" * (900 * 1024) + b'"}'  # invalid, and too large to travel in its letter
    poison = [deep, deep_object, json.dumps(contained).encode(), control, json.dumps(too_many).encode(), too_big]
    valid = [native_discharge(new_patient_id()) for _ in range(len(poison) + 1)]
    # Interleaved, so every batch holds poison and valid discharges together.
    order = [body for pair in zip(valid, poison, strict=False) for body in pair] + [valid[-1]]
    async with run_service(create_app(settings_for(ReconciliationSettings, batch_size=4))):
        js = nc.jetstream()
        for item in order:
            payload = item if isinstance(item, bytes) else item.model_dump_json().encode()
            await js.publish(DISCHARGE_INTAKE_SUBJECT, payload)
        found = await wait_for(lambda: reconciled(nc, len(valid)), timeout_s=30)
        parked = await wait_for(lambda: letters(nc, "reconciliation", len(poison)), timeout_s=30)
        bodies = await nc.jetstream().object_store(dead_letter_bucket("reconciliation"))
        kept_aside = [letter for letter in parked if letter.payload_object]
        stored = await bodies.get(kept_aside[0].payload_object) if kept_aside else None
    assert sorted(e.patient_id for e in found) == sorted(v.patient_id for v in valid)
    reasons = [letter.reason for letter in parked]
    assert any("nested too deeply" in r for r in reasons), reasons
    assert any("contained" in r for r in reasons), reasons
    assert any("home_medications" in r and str(MAX_MEDICATIONS) in r for r in reasons), reasons
    assert len(kept_aside) == 1 and stored.data == too_big and kept_aside[0].payload_size == len(too_big)
    assert all(letter.payload_sha256 for letter in parked)


async def test_commands_and_lists_stay_within_one_message(clean_jetstream, settings_for, run_service):
    from conftest import declare_as_owner

    from mtm.platform.streams import PATIENT_EVENTS
    from mtm.review.bootstrap import create_app
    from mtm.review.settings import ReviewSettings

    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    pharmacist = actors.pharmacist("rph-1")

    async def ask(subject: str, body: bytes) -> CommandReply:
        reply = await nc.request(subject, body, timeout=10, headers=pharmacist)
        return CommandReply.model_validate_json(reply.data)

    async with run_service(create_app(settings_for(ReviewSettings), checker=lambda rec: ([], "routine"))):
        for _ in range(260):
            await publish_event(nc, medications_reconciled(new_patient_id()))
        await wait_for(lambda: _at_least(nc, 260), timeout_s=60)
        note = CompleteReviewTask(task_id=uuid.uuid4()).model_dump(mode="json") | {"note": "n" * (MAX_NOTE + 1)}
        refused = await ask(COMPLETE_REVIEW_TASK, json.dumps(note).encode())
        huge = json.dumps(note | {"note": "n" * (1024 * 900)}).encode()
        also_refused = await ask(COMPLETE_REVIEW_TASK, huge)
        first = await ask(LIST_REVIEW_TASKS, ListReviewTasks(limit=200).model_dump_json().encode())
        second = await ask(LIST_REVIEW_TASKS, ListReviewTasks(limit=200, offset=200).model_dump_json().encode())
    assert refused.outcome == "invalid" and "note" in refused.message
    assert also_refused.outcome == "invalid"
    assert len(first.data) == 200 and len(second.data) == 60
    assert {t["task_id"] for t in first.data}.isdisjoint({t["task_id"] for t in second.data})


async def _at_least(nc, n: int):
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
    return len(found) >= n


async def test_nul_in_any_text_is_refused_where_it_enters_and_task_lists_keep_answering(
    clean_jetstream, settings_for, run_service
):
    """Regression: a discharge with a NUL in a medication name flowed into a review task whose reason Postgres
    could not read back, and every pharmacist's task list answered `error`; a note with a NUL went onto the log."""
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    nc = clean_jetstream
    js = nc.jetstream()
    pharmacist = actors.pharmacist("rph-1")
    nul = native_discharge(new_patient_id()).model_dump(mode="json")
    nul["data"]["home_medications"][0]["text"] = "Atorvastatin\x00 40 MG Oral Tablet"
    neighbour = native_discharge(new_patient_id())
    async with (
        run_service(reconciliation_app(settings_for(ReconciliationSettings))),
        run_service(review_app(settings_for(ReviewSettings))),
    ):
        await js.publish(DISCHARGE_INTAKE_SUBJECT, json.dumps(nul).encode())
        await js.publish(DISCHARGE_INTAKE_SUBJECT, neighbour.model_dump_json().encode())
        [letter] = await wait_for(lambda: letters(nc, "reconciliation", 1), timeout_s=30)
        await wait_for(lambda: _at_least(nc, 1), timeout_s=30)
        listed = await nc.request(LIST_REVIEW_TASKS, ListReviewTasks().model_dump_json().encode(), headers=pharmacist)
        [task] = CommandReply.model_validate_json(listed.data).data
        note = CompleteReviewTask(task_id=uuid.UUID(task["task_id"]), note="Reviewed\x00").model_dump_json()
        completed = await nc.request(COMPLETE_REVIEW_TASK, note.encode(), headers=pharmacist, timeout=10)
    assert "NUL" in letter.reason and letter.deliveries == 1
    assert task["patient"] == f"Patient/{neighbour.patient_id}"
    assert CommandReply.model_validate_json(completed.data).outcome == "invalid"


async def test_a_sealed_event_for_a_patient_no_key_can_exist_for_is_parked_and_its_neighbours_flow(
    clean_jetstream, settings_for, run_service
):
    """Regression: the keys of a batch's sealed events are fetched in one request before any is read. An event that
    only looks sealed, on a subject whose patient id holds a NUL (Postgres cannot hold it, so no key exists), failed
    that request at the key keeper: reconciliation's own batch failed on every redelivery, and review's waited
    forever on a keeper that never answered, with the valid events of the same batch. (Reconciliation no longer
    reads events back from the log; its keeper still answers review's request for the batch.)"""
    from mtm.contracts.subjects import patient_partition
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    nc = clean_jetstream
    js = nc.jetstream()
    hostile_patient = "a%00b"  # percent-encoded in the subject; the readers decode it to "a\x00b"
    partition = patient_partition("a\x00b")

    def looks_sealed(event) -> bytes:
        return event.model_dump_json().encode()[:-1] + b',"datakey":"k-1"}'

    valid = medications_reconciled(new_patient_id())
    discharge = native_discharge(new_patient_id())
    async with (
        run_service(reconciliation_app(settings_for(ReconciliationSettings))),
        run_service(review_app(settings_for(ReviewSettings), checker=lambda rec: ([], "routine"))),
    ):
        subject = f"mtm.patient.{partition}.{hostile_patient}.medications_reconciled.v1"
        await js.publish(subject, looks_sealed(medications_reconciled("p-1")))
        await publish_event(nc, valid)
        await js.publish(DISCHARGE_INTAKE_SUBJECT, discharge.model_dump_json().encode())

        async def tasks_for_both():
            found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
            patients = {m.subject.split(".")[3] for m in found}
            return patients >= {valid.patient_id, discharge.patient_id}

        await wait_for(tasks_for_both, timeout_s=60)
        [review_letter] = await wait_for(lambda: letters(nc, "review", 1), timeout_s=30)
    assert "datakey" in review_letter.reason and review_letter.deliveries == 1, review_letter.reason


async def test_an_event_too_large_for_one_message_once_sealed_is_relayed_through_the_object_store(
    clean_jetstream, settings_for, run_service, monkeypatch
):
    """Regression: the relay compared the clear row with the payload limit, then published it sealed (its data in
    base64, a third larger): an event that fit in the clear but not sealed failed to publish on every round, and
    every later event of the service stayed in the outbox. Then such an event was set aside, never reaching the
    log; now its sealed form goes to the log's object store and the log holds a reference, which a consumer
    (review) reads whole. Only an event past what the store keeps for one event is set aside."""
    import asyncpg
    from support.jetstream import read_events

    from mtm.platform.bodies import REFERENCE_MARKER
    from mtm.platform.outbox import enqueue_events
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    def with_message(size: int):
        event = medications_reconciled(new_patient_id())
        discrepancy = event.data.discrepancies[0].model_copy(update={"message": "m" * size})
        return event.model_copy(update={"data": event.data.model_copy(update={"discrepancies": (discrepancy,)})})

    monkeypatch.setattr("mtm.platform.outbox.MAX_STORED_BODY_BYTES", 2 * 1024 * 1024)
    nc = clean_jetstream
    big = with_message(900 * 1024)
    beyond = with_message(2 * 1024 * 1024)
    after = medications_reconciled(new_patient_id())
    app = reconciliation_app(settings_for(ReconciliationSettings, seal_events=True))  # the keeper seals
    async with (
        run_service(app),
        run_service(review_app(settings_for(ReviewSettings), checker=lambda rec: ([], "routine"))),
    ):
        conn = await asyncpg.connect(app.runtime.database_url)
        try:
            await enqueue_events(conn, [big, beyond, after])
            app.runtime.wake_relay()

            async def tasks_for_both() -> bool:
                found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
                return {m.subject.split(".")[3] for m in found} >= {big.patient_id, after.patient_id}

            await wait_for(tasks_for_both, timeout_s=60)
            parked = await conn.fetch("SELECT msg_id, reason FROM outbox_parked")
        finally:
            await conn.close()
        stored = [
            m
            for m in await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationsReconciled))
            if m.headers and m.headers.get("Nats-Msg-Id") == str(big.id)
        ]
        assert len(stored) == 1 and stored[0].data.startswith(REFERENCE_MARKER)
        assert await read_events(nc, MedicationsReconciled, stored) == [big]
    assert len(big.model_dump_json()) < 1024 * 1024 - 8 * 1024  # it fit in the clear
    assert [r["msg_id"] for r in parked] == [str(beyond.id)] and "larger" in parked[0]["reason"]
