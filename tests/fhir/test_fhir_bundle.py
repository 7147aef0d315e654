"""FHIR R4 bundle to TransitionOfCare: mapping of the mtm input convention, and errors that name the field."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest
from reconciliation.unit.toc_builders import (
    bundle,
    encounter,
    med,
    medication_list,
    patient,
    request,
    statement,
    toc_bundle,
)

from mtm.contracts.clinical import ListItemFlag, MedicationStatus
from mtm.fhir import BundleError, is_fhir_bundle, parse_bundle

pytestmark = pytest.mark.unit

DISCHARGE_CATEGORY = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "discharge"}]
}


def test_patient_encounter_and_care_team() -> None:
    toc = parse_bundle(toc_bundle([], []))
    assert toc.patient.patient_id == "p1"
    assert toc.patient.sex == "female"
    assert str(toc.patient.birth_date) == "1948-03-02"
    assert toc.encounter_id == "e1"
    assert toc.admitted_at == datetime(2024, 3, 1, 8, tzinfo=UTC)
    assert toc.discharged_at == datetime(2024, 3, 5, 15, 30, tzinfo=UTC)
    assert toc.source_format == "fhir-r4"

    with_team = bundle(
        patient(generalPractitioner=[{"reference": "Practitioner/pcp-9"}]),
        encounter(
            serviceProvider={"reference": "Organization/org-1", "display": "St. Elsewhere Hospital"},
            participant=[
                {
                    "type": [
                        {
                            "coding": [
                                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND"}
                            ]
                        }
                    ],
                    "individual": {"reference": "urn:uuid:doc-7"},
                }
            ],
        ),
    )
    toc = parse_bundle(with_team)
    assert toc.facility == "St. Elsewhere Hospital"
    assert toc.care_team.attending_physician_id == "doc-7"
    assert toc.care_team.primary_care_physician_id == "pcp-9"


def test_lists_give_home_and_discharge_entries_with_flags() -> None:
    toc = parse_bundle(
        toc_bundle(
            [med("Lisinopril 10 MG Oral Tablet", rxnorm="314076", dose=1, unit="tablet", timing="BID", route="PO")],
            [
                med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", repeat=(1, 1, "d"), flag="02"),
                med("Warfarin 5 MG Oral Tablet", status="stopped", reason="Bleeding"),
                med("Warfarin 5 MG Oral Tablet", status="stopped"),
                med("Aspirin 81 MG Oral Tablet", flag="01"),
            ],
        )
    )
    [home] = toc.home_medications
    assert (home.text, home.rxnorm_code, home.dose_value, home.dose_unit) == (
        "Lisinopril 10 MG Oral Tablet",
        "314076",
        1.0,
        "tablet",
    )
    assert (home.frequency, home.frequency_per_day, home.route) == ("BID", 2.0, "PO")
    changed, stopped_with_reason, stopped_silently, unchanged = toc.discharge_medications
    assert changed.list_flag is ListItemFlag.CHANGED and changed.change_documented
    assert (changed.frequency, changed.frequency_per_day) == ("1 per 1 d", 1.0)
    assert stopped_with_reason.status is MedicationStatus.STOPPED
    assert stopped_with_reason.status_reason == "Bleeding" and stopped_with_reason.change_documented
    assert not stopped_silently.change_documented
    assert unchanged.list_flag is ListItemFlag.UNCHANGED and not unchanged.change_documented


def test_a_note_or_extension_does_not_document_a_change() -> None:
    raw = toc_bundle([], [med("Lisinopril 20 MG Oral Tablet")])
    discharge_request = next(
        e["resource"] for e in raw["entry"] if e["resource"]["resourceType"] == "MedicationRequest"
    )
    discharge_request["note"] = [{"text": "dose increased"}]
    discharge_request["extension"] = [{"url": "http://example.org/changed", "valueBoolean": True}]

    [entry] = parse_bundle(raw).discharge_medications

    assert entry.change_documented is False


def test_medication_text_prefers_text_then_rxnorm_display() -> None:
    coded_only = request(med("unused"), "mr-coded")
    coded_only["medicationCodeableConcept"] = {
        "coding": [
            {"system": "http://snomed.info/sct", "code": "1", "display": "SNOMED name"},
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "617312",
                "display": "Atorvastatin 40 MG",
            },
        ]
    }
    toc = parse_bundle(bundle(patient(), encounter(), coded_only))
    [entry] = toc.discharge_medications
    assert (entry.text, entry.rxnorm_code) == ("Atorvastatin 40 MG", "617312")


def test_medication_reference_to_contained_and_bundled_medication() -> None:
    contained = request(med("unused"), "mr-contained")
    del contained["medicationCodeableConcept"]
    contained["contained"] = [
        {"resourceType": "Medication", "id": "m1", "code": {"text": "Metformin 500 MG Oral Tablet"}}
    ]
    contained["medicationReference"] = {"reference": "#m1"}
    bundled = request(med("unused"), "mr-bundled")
    del bundled["medicationCodeableConcept"]
    bundled["medicationReference"] = {"reference": "Medication/m2"}
    medication = {"resourceType": "Medication", "id": "m2", "code": {"coding": [{"display": "Lipitor 40 mg"}]}}

    toc = parse_bundle(bundle(patient(), encounter(), contained, bundled, medication))

    assert [m.text for m in toc.discharge_medications] == ["Metformin 500 MG Oral Tablet", "Lipitor 40 mg"]


def test_dosage_as_needed_and_route_coding() -> None:
    prn = request(med("Oxycodone 5 MG Oral Tablet", dose=1, unit="tablet", timing="Q6H"), "mr-prn")
    prn["dosageInstruction"][0]["asNeededCodeableConcept"] = {"text": "pain"}
    prn["dosageInstruction"][0]["route"] = {
        "coding": [{"system": "http://snomed.info/sct", "code": "26643006", "display": "Oral route"}]
    }

    [entry] = parse_bundle(bundle(patient(), encounter(), prn)).discharge_medications

    assert (entry.as_needed, entry.route, entry.frequency_per_day) == (True, "Oral route", 4.0)


def test_without_lists_statements_are_home_and_discharge_category_requests_are_discharge() -> None:
    home = statement(med("Lisinopril 10 MG Oral Tablet"), "ms-home")
    completed = statement(med("Amoxicillin 500 MG Oral Capsule", status="completed"), "ms-old")
    inpatient = request(med("Heparin 5000 UNT Injection"), "mr-inpatient", authoredOn="2024-03-01T09:00:00Z")
    at_discharge = request(med("Lisinopril 20 MG Oral Tablet"), "mr-discharge", category=[DISCHARGE_CATEGORY])
    after = request(med("Apixaban 5 MG Oral Tablet"), "mr-after", authoredOn="2024-03-05T16:00:00Z")

    toc = parse_bundle(bundle(patient(), encounter(), home, completed, inpatient, at_discharge, after))

    assert [m.entry_id for m in toc.home_medications] == ["ms-home"]
    assert [m.entry_id for m in toc.discharge_medications] == ["mr-discharge", "mr-after"]


def test_without_any_discharge_marker_the_active_requests_are_the_current_list() -> None:
    active = request(med("Lisinopril 10 MG Oral Tablet"), "mr-active", authoredOn="2020-01-01")
    stopped = request(med("Amoxicillin 500 MG Oral Capsule", status="stopped"), "mr-stopped")

    toc = parse_bundle(bundle(patient(), active, stopped))

    assert toc.home_medications == ()
    assert [m.entry_id for m in toc.discharge_medications] == ["mr-active"]
    assert toc.encounter_id is None


def test_entered_in_error_entries_are_dropped() -> None:
    raw = toc_bundle([med("Lisinopril 10 MG Oral Tablet", status="entered-in-error")], [])

    assert parse_bundle(raw).home_medications == ()


def test_conditions_allergies_and_latest_observations() -> None:
    def condition(cid: str, status: str | None, text: str) -> dict:
        resource = {
            "resourceType": "Condition",
            "id": cid,
            "subject": {"reference": "Patient/p1"},
            "code": {
                "text": text,
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "44054006"},
                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"},
                ],
            },
        }
        if status:
            resource["clinicalStatus"] = {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]
            }
        return resource

    def allergy(aid: str, status: str) -> dict:
        return {
            "resourceType": "AllergyIntolerance",
            "id": aid,
            "patient": {"reference": "Patient/p1"},
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": status}
                ]
            },
            "category": ["medication"],
            "criticality": "high",
            "code": {"text": "Penicillin V"},
        }

    def observation(oid: str, code: str, value: float, when: str) -> dict:
        return _loinc_observation(oid, code, when, valueQuantity={"value": value, "unit": "mL/min/{1.73_m2}"})

    pgx = {
        "resourceType": "Observation",
        "id": "pgx",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"text": "CYP2C19 phenotype"},
        "valueCodeableConcept": {"text": "Poor metabolizer"},
    }
    hla = {
        "resourceType": "Observation",
        "id": "hla",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"text": "HLA-B*57:01"},
        "valueCodeableConcept": {"coding": [{"display": "Positive"}]},
    }
    unrelated = observation("bp", "8480-6", 120, "2024-03-04")
    toc = parse_bundle(
        bundle(
            patient(),
            encounter(),
            condition("c1", "active", "Type 2 diabetes"),
            condition("c2", "resolved", "Pneumonia"),
            condition("c3", None, "Hypertension"),
            allergy("a1", "active"),
            allergy("a2", "inactive"),
            observation("egfr-old", "33914-3", 62, "2024-01-01"),
            observation("egfr-new", "62238-1", 41, "2024-03-04T06:00:00Z"),
            observation("egfr-same-code-older", "62238-1", 55, "2023-06-01"),
            pgx,
            hla,
            unrelated,
        )
    )

    # A resolved condition is kept as history with its status (the drug checks count some history, e.g. a VTE).
    assert [(c.text, c.system, c.code, c.clinical_status) for c in toc.conditions] == [
        ("Type 2 diabetes", "http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "active"),
        ("Pneumonia", "http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "resolved"),
        ("Hypertension", "http://hl7.org/fhir/sid/icd-10-cm", "E11.9", "active"),
    ]
    [penicillin] = toc.allergies
    assert (penicillin.text, penicillin.category, penicillin.criticality) == ("Penicillin V", "medication", "high")
    by_text = {(o.code, o.text): o for o in toc.observations}
    assert by_text[("62238-1", "eGFR")].value == 41
    assert by_text[("33914-3", "eGFR")].value == 62
    assert by_text[(None, "CYP2C19 phenotype")].value_text == "Poor metabolizer"
    assert by_text[(None, "HLA-B*57:01")].value_text == "Positive"
    assert len(toc.observations) == 4


def _loinc_observation(oid: str, code: str, when: str, **value: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": when,
        **value,
    }


def test_patient_states_height_and_refuted_conditions() -> None:
    def coded(oid: str, code: str, answer: str, when: str) -> dict:
        concept = {"coding": [{"system": "http://snomed.info/sct", "display": answer}]}
        return _loinc_observation(oid, code, when, valueCodeableConcept=concept)

    height = _loinc_observation("height", "8302-2", "2024-03-01", valueQuantity={"value": 168, "unit": "cm"})
    refuted = {
        "resourceType": "Condition",
        "id": "refuted",
        "subject": {"reference": "Patient/p1"},
        "verificationStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]
        },
        "code": {"text": "Pulmonary embolism"},
    }
    toc = parse_bundle(
        bundle(
            patient(),
            encounter(),
            refuted,
            height,
            coded("preg-old", "82810-3", "Not pregnant", "2023-01-01"),
            coded("preg", "82810-3", "Pregnant", "2024-03-01"),
            coded("smoke", "72166-2", "Current every day smoker", "2024-03-01"),
        )
    )

    assert toc.conditions == ()
    by_code = {o.code: o for o in toc.observations}
    assert by_code["82810-3"].value_text == "Pregnant"  # the latest answer per code
    assert by_code["72166-2"].value_text == "Current every day smoker"
    assert by_code["8302-2"].value == 168
    assert len(toc.observations) == 3


@pytest.mark.parametrize("as_type", [bytes, str, dict])
def test_accepts_bytes_str_and_dict(as_type: type) -> None:
    raw = toc_bundle([], [med("Aspirin 81 MG Oral Tablet")])
    given = raw if as_type is dict else json.dumps(raw) if as_type is str else json.dumps(raw).encode()

    assert parse_bundle(given).discharge_medications[0].text == "Aspirin 81 MG Oral Tablet"


def test_is_fhir_bundle() -> None:
    assert is_fhir_bundle({"resourceType": "Bundle"})
    assert not is_fhir_bundle({"resourceType": "Patient"})
    assert not is_fhir_bundle({"patient": {}})
    assert not is_fhir_bundle([])  # type: ignore[arg-type]


# --- invalid input --------------------------------------------------------------------------------------------


def _with(raw: dict, resource_id: str, **changes: object) -> dict:
    changed = copy.deepcopy(raw)
    for entry in changed["entry"]:
        if entry["resource"]["id"] == resource_id:
            entry["resource"].update(changes)
    return changed


VALID = bundle(
    patient(),
    encounter(),
    medication_list("10183-2", [request(med("Aspirin 81 MG Oral Tablet"), "abc")], ["01"]),
    request(med("Aspirin 81 MG Oral Tablet", dose=1, unit="tablet", repeat=(1, 1, "d")), "abc"),
)


def _error(raw: object) -> BundleError:
    with pytest.raises(BundleError) as caught:
        parse_bundle(raw)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    return caught.value


def test_valid_fixture_parses() -> None:
    assert parse_bundle(VALID).discharge_medications[0].list_flag is ListItemFlag.UNCHANGED


def test_malformed_json() -> None:
    error = _error(b'{"resourceType": "Bundle", ')
    assert (error.resource, error.field) == ("Bundle", "$")
    assert str(error).startswith("Bundle: $: malformed JSON")


def test_not_a_bundle() -> None:
    error = _error({"resourceType": "Patient", "id": "p1"})
    assert str(error) == "Bundle: resourceType: expected 'Bundle', got 'Patient'"
    assert _error("[1, 2]").reason == "expected a JSON object, got list"


def test_missing_patient() -> None:
    raw = copy.deepcopy(VALID)
    raw["entry"] = raw["entry"][1:]
    assert str(_error(raw)) == "Bundle: entry: no Patient resource"


def test_invalid_medication_request_status_names_resource_and_field() -> None:
    error = _error(_with(VALID, "abc", status="finished"))
    assert (error.resource, error.field) == ("MedicationRequest/abc", "status")
    assert "'finished' is not one of active" in error.reason


def test_timing_frequency_that_is_not_a_positive_integer() -> None:
    dosage = [{"timing": {"repeat": {"frequency": 0, "period": 1, "periodUnit": "d"}}}]
    error = _error(_with(VALID, "abc", dosageInstruction=dosage))
    assert str(error).startswith("MedicationRequest/abc: dosageInstruction[0].timing.repeat.frequency: ")


def test_missing_required_element() -> None:
    raw = copy.deepcopy(VALID)
    del raw["entry"][3]["resource"]["intent"]
    error = _error(raw)
    assert (error.resource, error.field) == ("MedicationRequest/abc", "intent")


def test_unknown_element() -> None:
    error = _error(_with(VALID, "p1", favouriteColour="blue"))
    assert (error.resource, error.field) == ("Patient/p1", "favouriteColour")


def test_invalid_patient_gender_and_date() -> None:
    assert _error(_with(VALID, "p1", gender="f")).field == "gender"
    assert _error(_with(VALID, "p1", birthDate="1948-13-40")).field == "birthDate"


def test_unknown_or_missing_resource_type() -> None:
    raw = copy.deepcopy(VALID)
    raw["entry"][3]["resource"]["resourceType"] = "MedicineRequest"
    assert str(_error(raw)) == "Bundle: entry[3].resource.resourceType: unknown FHIR resource type 'MedicineRequest'"
    del raw["entry"][3]["resource"]["resourceType"]
    assert _error(raw).field == "entry[3].resource.resourceType"


def test_list_entry_that_does_not_resolve() -> None:
    raw = copy.deepcopy(VALID)
    raw["entry"][2]["resource"]["entry"][0]["item"]["reference"] = "MedicationRequest/zzz"
    error = _error(raw)
    assert (error.resource, error.field) == ("List/list-10183-2", "entry[0].item")


def test_invalid_list_item_flag() -> None:
    raw = copy.deepcopy(VALID)
    raw["entry"][2]["resource"]["entry"][0]["flag"]["coding"][0]["code"] = "07"
    error = _error(raw)
    assert (error.resource, error.field) == ("List/list-10183-2", "entry[0].flag")


def test_medication_without_any_name() -> None:
    error = _error(_with(VALID, "abc", medicationCodeableConcept={"coding": [{"system": "http://example.org"}]}))
    assert (error.resource, error.field) == ("MedicationRequest/abc", "medicationCodeableConcept")


def test_bundle_level_error() -> None:
    raw = copy.deepcopy(VALID)
    raw["type"] = "pile"
    assert str(_error(raw)).startswith("Bundle: type: 'pile' is not one of")


def test_patient_without_id() -> None:
    raw = copy.deepcopy(VALID)
    del raw["entry"][0]["resource"]["id"]
    error = _error(raw)
    assert (error.resource, error.field) == ("Patient", "id")


def test_patient_id_longer_than_the_contract_allows() -> None:
    error = _error(_with(VALID, "p1", id="p" * 65))
    assert error.field == "id"
