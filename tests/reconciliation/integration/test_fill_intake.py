"""Pharmacy fills on real NATS and Postgres: native and FHIR in, MedicationDispensed out, the medication list kept
current (last fill date, history), a bad fill parked with its reason while the next one flows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reconciliation.integration.test_fhir_intake import _found, medication_list
from support.events import new_patient_id
from support.jetstream import stream_messages, wait_for
from support.services import native_fill

from mtm.contracts import DeadLetter, MedicationDispensed
from mtm.contracts.subjects import FILL_INTAKE_SUBJECT, PATIENT_EVENTS_STREAM, dead_letter_stream, event_filter
from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

pytestmark = pytest.mark.integration
MEMBER = Path(__file__).resolve().parents[2] / "program" / "data" / "member_eligible.json"


def dispense_bundle(patient_id: str) -> dict:
    """The member bundle's MedicationDispenses (and their orders), for another patient."""
    member = json.loads(MEMBER.read_text().replace("member-1", patient_id))
    kept = [e for e in member["entry"] if e["resource"]["resourceType"] in ("MedicationDispense", "MedicationRequest")]
    return {"resourceType": "Bundle", "type": "collection", "entry": kept}


async def test_fills_are_recorded_and_kept_on_the_medication_list(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    patient = new_patient_id()
    good = dispense_bundle(patient)
    bad = dispense_bundle(patient)
    del bad["entry"][-1]["resource"]["daysSupply"]
    async with run_service(create_app(settings_for(ReconciliationSettings))):
        js = nc.jetstream()
        await js.publish(FILL_INTAKE_SUBJECT, json.dumps(bad).encode())
        await js.publish(FILL_INTAKE_SUBJECT, json.dumps(good).encode())
        await js.publish(FILL_INTAKE_SUBJECT, json.dumps(good).encode())  # a feed sending the same fills again
        native = native_fill(patient)
        await js.publish(FILL_INTAKE_SUBJECT, native.model_dump_json().encode())
        fills = await wait_for(
            lambda: _at_least(stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationDispensed)), 5)
        )
        letters = await wait_for(lambda: stream_messages(nc, dead_letter_stream("reconciliation")))
        current = await wait_for(lambda: _found(medication_list(nc, patient)))
        as_fhir = await medication_list(nc, patient, "fhir")

    events = [MedicationDispensed.model_validate_json(m.data) for m in fills]
    assert len(events) == 5 and {e.patient_id for e in events} == {patient}
    by_drug = {e.data.dispense_id: e.data.ingredients for e in events}
    assert by_drug["urn:pharmacy:rx|rx-1"] == ("atorvastatin",)
    assert by_drug[native.data.dispense_id] == ("metformin",)  # resolved from its text at intake
    letter = DeadLetter.model_validate_json(letters[0].data)
    assert len(letters) == 1 and "daysSupply" in letter.reason, letter.reason

    entries = {tuple(e["ingredients"]): e for e in current.data["entries"]}
    statin = entries[("atorvastatin",)]
    assert [f["filled_on"] for f in statin["fills"]] == ["2025-10-03", "2025-12-02"]
    assert statin["last_filled_on"] == "2025-12-02"
    assert statin["provenance"][0]["source"] == "pharmacy"
    assert entries[("metformin",)]["last_filled_on"] == native.data.filled_on.isoformat()
    statements = {s["medicationCodeableConcept"]["text"]: s for s in as_fhir.data["contained"]}
    assert statements["Atorvastatin 40 MG Oral Tablet"]["effectivePeriod"] == {"start": "2025-10-03"}


async def _at_least(found, count: int):
    messages = await found
    return messages if len(messages) >= count else None


async def test_a_fill_with_a_nul_in_its_text_is_refused_where_it_enters(clean_jetstream, settings_for, run_service):
    """Regression: the fill intake took a NUL in a text (the discharge intake refused it), which no Postgres text
    holds: the fill failed in the medication list's transaction on every delivery instead of being parked at once."""
    nc = clean_jetstream
    nul = native_fill(new_patient_id()).model_dump(mode="json")
    nul["data"]["medication"]["text"] = "Metformin\x00 500 MG Oral Tablet"
    neighbour = native_fill(new_patient_id())
    async with run_service(create_app(settings_for(ReconciliationSettings))):
        js = nc.jetstream()
        await js.publish(FILL_INTAKE_SUBJECT, json.dumps(nul).encode())
        await js.publish(FILL_INTAKE_SUBJECT, neighbour.model_dump_json().encode())
        [fill] = await wait_for(
            lambda: _at_least(stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationDispensed)), 1)
        )
        [letter] = await wait_for(lambda: stream_messages(nc, dead_letter_stream("reconciliation")))
    assert MedicationDispensed.model_validate_json(fill.data).patient_id == neighbour.patient_id
    parked = DeadLetter.model_validate_json(letter.data)
    assert "NUL" in parked.reason and parked.deliveries == 1, parked.reason
