"""A plan member's FHIR R4 record (conditions, medications, fills, pharmacy claims) and pharmacy fills as contracts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from mtm.contracts.clinical import Condition, MedicationEntry
from mtm.contracts.program import Dispense
from mtm.drugs import resolve
from mtm.fhir import codes
from mtm.fhir.bundle import (
    _aware,
    _BundleReader,
    _concept_text,
    _date,
    _dosage_fields,
    _first_code,
    _label,
    _medication_text,
    _preferred_coding,
    _reference_id,
)
from mtm.fhir.errors import BundleError
from mtm.fhir.validation import load_bundle

CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
DMP_FLAG_SYSTEM = "urn:mtm:part-d-drug-management-program"
"""Flag.code system mtm reads for Part D drug management programs; code `at-risk` marks an at-risk beneficiary."""
_DISPENSED = frozenset({"completed"})
_CURRENT_ORDER = frozenset({"active", "intended", "on-hold"})
_DAYS_PER_UNIT = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7, "mo": 30, "month": 30, "months": 30}


@dataclass(frozen=True, slots=True)
class MemberMedication:
    """A current order or statement: what the patient is on, and the length of the course when it is stated."""

    name: str
    ingredients: tuple[str, ...]
    course_days: int | None


@dataclass(frozen=True, slots=True)
class ClaimCost:
    on: date
    amount: float


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """What targeting and adherence read of one member: everything is as the bundle states it."""

    patient_id: str
    birth_date: date | None
    conditions: tuple[Condition, ...]
    medications: tuple[MemberMedication, ...]
    fills: tuple[Dispense, ...]
    claims: tuple[ClaimCost, ...]
    drug_management_program_at_risk: bool
    latest: date | None
    """The latest date in the record (fill, claim, order, onset): the program year comes from it."""


def parse_member_bundle(raw: bytes | str | dict[str, Any]) -> MemberRecord:
    """Validate a FHIR R4 bundle of one member and read it; raises BundleError naming resource and field."""
    reader = _BundleReader(load_bundle(raw))
    patient = reader._patient()
    patient_id = patient.id
    if not patient_id:
        raise BundleError(_label(patient), "id", "missing; mtm keys every record by the patient id")
    fills = tuple(fill for _, fill in _dispenses(reader, default_patient=patient_id))
    conditions = tuple(_conditions(reader))
    medications = tuple(_medications(reader))
    claims = tuple(_claims(reader))
    dates = [f.filled_on for f in fills] + [c.on for c in claims] + _record_dates(reader)
    return MemberRecord(
        patient_id=patient_id,
        birth_date=_date(patient.birthDate),
        conditions=conditions,
        medications=medications,
        fills=fills,
        claims=claims,
        drug_management_program_at_risk=_dmp_at_risk(reader),
        latest=max(dates) if dates else None,
    )


def parse_dispense_bundle(raw: bytes | str | dict[str, Any]) -> list[tuple[str, Dispense]]:
    """Every dispensed MedicationDispense of a bundle with its patient's id (a pharmacy may send several patients)."""
    reader = _BundleReader(load_bundle(raw))
    found = list(_dispenses(reader, default_patient=None))
    if not found:
        raise BundleError("Bundle", "entry", "no MedicationDispense with status completed")
    return found


def _dispenses(reader: _BundleReader, *, default_patient: str | None) -> Iterable[tuple[str, Dispense]]:
    for resource in reader.of_type("MedicationDispense"):
        if resource.status not in _DISPENSED:
            continue  # prepared, cancelled, declined or in error: nothing left the pharmacy
        label = _label(resource)
        patient_id = _reference_id(resource.subject) or default_patient
        if not patient_id:
            raise BundleError(label, "subject", "missing; a fill must name its patient")
        if default_patient is not None and patient_id != default_patient:
            raise BundleError(label, "subject", f"{patient_id!r} is not the bundle's Patient {default_patient!r}")
        yield patient_id, dispense_of(reader, resource)


def dispense_of(reader: _BundleReader, resource: Any) -> Dispense:
    label = _label(resource)
    concept, field = reader._medication_concept(resource, label)
    text, rxnorm_code = _medication_text(concept, label, field)
    dosages = resource.dosageInstruction or []
    entry = MedicationEntry(
        entry_id=resource.id, text=text, rxnorm_code=rxnorm_code, **_dosage_fields(dosages[0] if dosages else None)
    )
    days = resource.daysSupply
    if days is None or days.value is None:
        raise BundleError(label, "daysSupply", "missing; adherence and maintenance use are counted in days supplied")
    days_supply = _days(days)
    if days_supply < 1:
        raise BundleError(label, "daysSupply", f"{days.value} is not a supply of at least one day")
    handed = _date(resource.whenHandedOver) or _date(resource.whenPrepared)
    if handed is None:
        raise BundleError(label, "whenHandedOver", "missing (and no whenPrepared): the fill date is needed")
    quantity = resource.quantity
    prescriber = None
    for reference in resource.authorizingPrescription or ():
        order = reader.resolve(reference, resource)
        if order is not None and order.get_resource_type() == "MedicationRequest":
            prescriber = _reference_id(order.requester)
            break
    pharmacy = _reference_id(resource.location) or next(
        (_reference_id(p.actor) for p in resource.performer or () if p.actor is not None), None
    )
    return Dispense(
        dispense_id=_dispense_id(resource),
        medication=entry,
        ingredients=tuple(resolve(text, rxnorm_code).ingredients),
        quantity=float(quantity.value) if quantity is not None and quantity.value is not None else None,
        quantity_unit=(quantity.unit or quantity.code) if quantity is not None else None,
        days_supply=days_supply,
        filled_on=handed,
        pharmacy_id=pharmacy,
        prescriber_id=prescriber,
        source_format="fhir-r4",
    )


def _dispense_id(resource: Any) -> str:
    """The pharmacy's identifier when given, else the resource id, else a digest of the resource's content."""
    for identifier in resource.identifier or ():
        if identifier.value:
            return f"{identifier.system}|{identifier.value}" if identifier.system else identifier.value
    if resource.id:
        return f"MedicationDispense/{resource.id}"
    content = json.dumps(resource.model_dump(mode="json"), sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(content).hexdigest()


def _conditions(reader: _BundleReader) -> Iterable[Condition]:
    for resource in reader.of_type("Condition"):
        if _first_code(resource.verificationStatus) in ("refuted", "entered-in-error"):
            continue
        coding = _preferred_coding(resource.code, (codes.ICD10CM, codes.SNOMED))
        text = _concept_text(resource.code) or (coding.code if coding else None)
        if not text:
            continue
        status = _first_code(resource.clinicalStatus)
        if status is None and (resource.abatementDateTime or resource.abatementPeriod or resource.abatementString):
            status = "resolved"  # no status but an abatement: it has ended
        yield Condition(
            system=coding.system if coding else None,
            code=coding.code if coding else None,
            text=text,
            clinical_status=status or "active",
        )


def _medications(reader: _BundleReader) -> Iterable[MemberMedication]:
    for resource in [*reader.of_type("MedicationRequest"), *reader.of_type("MedicationStatement")]:
        if resource.status not in _CURRENT_ORDER and not (
            resource.get_resource_type() == "MedicationStatement" and resource.status == "active"
        ):
            continue
        label = _label(resource)
        concept, field = reader._medication_concept(resource, label)
        text, rxnorm_code = _medication_text(concept, label, field)
        yield MemberMedication(
            name=text, ingredients=tuple(resolve(text, rxnorm_code).ingredients), course_days=_course_days(resource)
        )


def _course_days(resource: Any) -> int | None:
    """The stated length of the course: the order's expected supply duration, else the dosage's bounds."""
    dispense = getattr(resource, "dispenseRequest", None)
    duration = dispense.expectedSupplyDuration if dispense is not None else None
    if duration is not None and duration.value is not None:
        return _days(duration)
    dosages = getattr(resource, "dosageInstruction", None) or getattr(resource, "dosage", None) or []
    repeat = dosages[0].timing.repeat if dosages and dosages[0].timing else None
    if repeat is None:
        return None
    bounds = repeat.boundsDuration
    if bounds is not None and bounds.value is not None:
        return _days(bounds)
    period = repeat.boundsPeriod
    if period is not None and period.start and period.end:
        start, end = _aware(period.start), _aware(period.end)
        if start and end:
            return (end.date() - start.date()).days + 1
    return None


def _days(quantity: Any) -> int:
    """A Duration or Quantity in days (d, wk, mo, or spelled out); a bare number is days."""
    return round(float(quantity.value) * _DAYS_PER_UNIT.get((quantity.unit or quantity.code or "d").lower(), 1))


def _claims(reader: _BundleReader) -> Iterable[ClaimCost]:
    """Totals of pharmacy claims: ExplanationOfBenefit (submitted total) and Claim (total)."""
    for resource in [*reader.of_type("ExplanationOfBenefit"), *reader.of_type("Claim")]:
        if resource.status in ("cancelled", "entered-in-error"):
            continue
        if not any(c.system == CLAIM_TYPE and c.code == "pharmacy" for c in (resource.type.coding or ())):
            continue  # hospital and office claims are not drug costs
        amount = _claim_total(resource)
        on = _date(resource.billablePeriod.start) if resource.billablePeriod else None
        on = on or _date(resource.created)
        if amount is not None and on is not None:
            yield ClaimCost(on=on, amount=amount)


def _claim_total(resource: Any) -> float | None:
    total = resource.total
    if total is None:
        return None
    if not isinstance(total, list):  # Claim.total is one Money
        return float(total.value) if total.value is not None else None
    for entry in total:  # ExplanationOfBenefit.total: the submitted amount is the drug's gross cost
        if any(c.code == "submitted" for c in (entry.category.coding or ())) and entry.amount is not None:
            return float(entry.amount.value)
    return None


def _dmp_at_risk(reader: _BundleReader) -> bool:
    return any(
        flag.status == "active"
        and any(c.system == DMP_FLAG_SYSTEM and c.code == "at-risk" for c in flag.code.coding or ())
        for flag in reader.of_type("Flag")
    )


def _record_dates(reader: _BundleReader) -> list[date]:
    found: list[date] = []
    for resource in reader.of_type("MedicationRequest"):
        if resource.authoredOn:
            found.append(_date(resource.authoredOn))
    for resource in reader.of_type("Condition"):
        for value in (resource.recordedDate, resource.onsetDateTime):
            if value:
                found.append(_date(value))
    for resource in reader.of_type("Encounter"):
        if resource.period is not None and (resource.period.end or resource.period.start):
            found.append(_date(resource.period.end or resource.period.start))
    return [d for d in found if d is not None]
