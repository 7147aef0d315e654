"""Reconciliation on real NATS and Postgres: FHIR bundles in, MedicationsReconciled and the medication list out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import actors
from support.jetstream import stream_messages, wait_for

from mtm.contracts import CommandReply, DeadLetter, GetMedicationList, MedicationsReconciled, TransitionOfCareRecorded
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_SUBJECT,
    GET_MEDICATION_LIST,
    PATIENT_EVENTS_STREAM,
    dead_letter_stream,
    event_filter,
)
from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

pytestmark = pytest.mark.integration
BUNDLE = Path(__file__).resolve().parents[1] / "data" / "discharge_mixed.json"
REPORT = Path(__file__).resolve().parents[1] / "data" / "discharge_mixed.report.json"


def bundle_for(patient_id: str) -> bytes:
    bundle = json.loads(BUNDLE.read_text())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["id"] = patient_id
    return json.dumps(bundle).replace('"Patient/p1"', f'"Patient/{patient_id}"').encode()


async def medication_list(nc, patient_id: str, fmt: str = "mtm") -> CommandReply:
    query = GetMedicationList(patient_id=patient_id, format=fmt)
    reply = await nc.request(
        GET_MEDICATION_LIST, query.model_dump_json().encode(), timeout=5, headers=actors.pharmacist("rph-1")
    )
    return CommandReply.model_validate_json(reply.data)


async def test_a_fhir_bundle_is_reconciled_and_an_invalid_one_is_parked(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    invalid = json.loads(bundle_for("p-invalid"))
    request = next(e["resource"] for e in invalid["entry"] if e["resource"]["resourceType"] == "MedicationRequest")
    request["status"] = "finished"
    async with run_service(create_app(settings_for(ReconciliationSettings))):
        js = nc.jetstream()
        await js.publish(DISCHARGE_INTAKE_SUBJECT, json.dumps(invalid).encode())
        await js.publish(DISCHARGE_INTAKE_SUBJECT, bundle_for("p-valid"))
        await js.publish(DISCHARGE_INTAKE_SUBJECT, bundle_for("p-valid"))  # a resend is the same event
        reconciled = await wait_for(
            lambda: stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationsReconciled))
        )
        letters = await wait_for(lambda: stream_messages(nc, dead_letter_stream("reconciliation")))
        current = await wait_for(lambda: _found(medication_list(nc, "p-valid")))
        as_fhir = await medication_list(nc, "p-valid", "fhir")
        missing = await medication_list(nc, "p-nobody")

    event = MedicationsReconciled.model_validate_json(reconciled[0].data)
    assert event.patient_id == "p-valid" and len(reconciled) == 1
    assert len(await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(TransitionOfCareRecorded))) == 1
    expected = json.loads(REPORT.read_text())
    assert sorted((d.type, list(d.ingredients)) for d in event.data.discrepancies) == sorted(
        (d["type"], d["ingredients"]) for d in expected["discrepancies"]
    )
    assert sorted((i.status, list(i.ingredients)) for i in event.data.items) == sorted(
        (i["status"], i["ingredients"]) for i in expected["items"]
    )
    assert all(i.ingredient_doses or not i.resolved or i.status == "stopped" for i in event.data.items)

    letter = DeadLetter.model_validate_json(letters[0].data)
    assert len(letters) == 1
    assert letter.reason.startswith("MedicationRequest/") and "status" in letter.reason, letter.reason
    assert json.loads(letter.payload) == invalid

    entries = current.data["entries"]
    assert {tuple(e["ingredients"]) for e in entries} >= {("apixaban",), ("lisinopril",), ("metoprolol",)}
    assert all(e["provenance"][-1]["event_id"] == str(event.id) for e in entries)
    assert as_fhir.data["resourceType"] == "List" and as_fhir.data["code"]["coding"][0]["code"] == "10160-0"
    assert missing.outcome == "not_found"


async def _found(reply_coroutine):
    reply = await reply_coroutine
    return reply if reply.ok else None
