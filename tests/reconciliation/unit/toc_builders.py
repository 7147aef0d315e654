"""Small FHIR R4 transition-of-care bundles for tests, following the mtm input convention."""

from __future__ import annotations

import itertools
from typing import Any

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LIST_ITEM_FLAG = "http://terminology.hl7.org/CodeSystem/list-item-flag"

_ids = itertools.count(1)


def med(
    text: str,
    *,
    rxnorm: str | None = None,
    dose: float | None = None,
    unit: str | None = None,
    timing: str | None = None,
    repeat: tuple[int, float, str] | None = None,
    route: str | None = None,
    prn: bool = False,
    status: str = "active",
    reason: str | None = None,
    flag: str | None = None,
) -> dict[str, Any]:
    """A medication with its dosage; `flag` is the list-item flag used when placed on the discharge list."""
    concept: dict[str, Any] = {"text": text}
    if rxnorm:
        concept["coding"] = [{"system": RXNORM, "code": rxnorm, "display": text}]
    dosage: dict[str, Any] = {}
    if dose is not None:
        quantity: dict[str, Any] = {"value": dose}
        if unit:
            quantity["unit"] = unit
        dosage["doseAndRate"] = [{"doseQuantity": quantity}]
    if timing:
        dosage["timing"] = {"code": {"text": timing}}
    if repeat:
        frequency, period, period_unit = repeat
        dosage["timing"] = {"repeat": {"frequency": frequency, "period": period, "periodUnit": period_unit}}
    if route:
        dosage["route"] = {"text": route}
    if prn:
        dosage["asNeededBoolean"] = True
    return {
        "concept": concept,
        "dosage": dosage,
        "status": status,
        "reason": reason,
        "flag": flag,
    }


def statement(medication: dict[str, Any], resource_id: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": resource_id or f"ms{next(_ids)}",
        "status": medication["status"],
        "medicationCodeableConcept": medication["concept"],
        "subject": {"reference": "Patient/p1"},
    }
    if medication["dosage"]:
        resource["dosage"] = [medication["dosage"]]
    if medication["reason"]:
        resource["statusReason"] = [{"text": medication["reason"]}]
    return resource


def request(medication: dict[str, Any], resource_id: str | None = None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": resource_id or f"mr{next(_ids)}",
        "status": medication["status"],
        "intent": "order",
        "medicationCodeableConcept": medication["concept"],
        "subject": {"reference": "Patient/p1"},
        **extra,
    }
    if medication["dosage"]:
        resource["dosageInstruction"] = [medication["dosage"]]
    if medication["reason"]:
        resource["statusReason"] = {"text": medication["reason"]}
    return resource


def medication_list(code: str, resources: list[dict[str, Any]], flags: list[str | None]) -> dict[str, Any]:
    entries = []
    for resource, flag in zip(resources, flags, strict=True):
        entry: dict[str, Any] = {"item": {"reference": f"{resource['resourceType']}/{resource['id']}"}}
        if flag:
            entry["flag"] = {"coding": [{"system": LIST_ITEM_FLAG, "code": flag}]}
        entries.append(entry)
    resource: dict[str, Any] = {
        "resourceType": "List",
        "id": f"list-{code}",
        "status": "current",
        "mode": "snapshot",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "encounter": {"reference": "Encounter/e1"},
    }
    if entries:
        resource["entry"] = entries
    return resource


def patient(patient_id: str = "p1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "gender": "female", "birthDate": "1948-03-02", **extra}


def encounter(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-03-01T08:00:00Z", "end": "2024-03-05T15:30:00Z"},
        **extra,
    }


def bundle(*resources: dict[str, Any], bundle_type: str = "collection") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }


def toc_bundle(home: list[dict[str, Any]], discharge: list[dict[str, Any]], *extra: dict[str, Any]) -> dict[str, Any]:
    """Patient, inpatient Encounter, home List 10160-0 and discharge List 10183-2 with the given medications."""
    statements = [statement(m) for m in home]
    requests = [request(m) for m in discharge]
    return bundle(
        patient(),
        encounter(),
        medication_list("10160-0", statements, [None] * len(statements)),
        medication_list("10183-2", requests, [m["flag"] for m in discharge]),
        *statements,
        *requests,
        *extra,
    )
