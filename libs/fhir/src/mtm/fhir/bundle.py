"""Map a validated FHIR R4 transition-of-care bundle to the TransitionOfCare contract."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.dosage import Dosage
from fhir.resources.R4B.reference import Reference
from mtm.contracts.clinical import (
    Allergy,
    CareTeam,
    Condition,
    ListItemFlag,
    MedicationEntry,
    MedicationStatus,
    Observation,
    PatientDemographics,
)
from mtm.contracts.events import TransitionOfCare
from mtm.drugs import frequency_per_day
from mtm.fhir import codes
from mtm.fhir.errors import BundleError
from mtm.fhir.validation import load_bundle

_PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RXNORM_CODE = re.compile(r"^[0-9]{1,10}$")
_PHARMACOGENE = re.compile(
    r"^(CYP[0-9][A-Z0-9]*|HLA-[A-Z]+[0-9]*|TPMT|NUDT15|DPYD|SLCO1B1|VKORC1|UGT1A1|G6PD|IFNL3|CACNA1S|RYR1|NAT2|"
    r"MT-RNR1|ABCG2|CFTR)\b",
    re.IGNORECASE,
)

_MEDICATION_STATUS: dict[str, MedicationStatus] = {
    "active": MedicationStatus.ACTIVE,
    "intended": MedicationStatus.ACTIVE,
    "on-hold": MedicationStatus.ON_HOLD,
    "stopped": MedicationStatus.STOPPED,
    "not-taken": MedicationStatus.STOPPED,
    "completed": MedicationStatus.COMPLETED,
    "cancelled": MedicationStatus.CANCELLED,
    "draft": MedicationStatus.UNKNOWN,
    "unknown": MedicationStatus.UNKNOWN,
}
_DOCUMENTING_FLAGS = frozenset(
    {
        ListItemFlag.CHANGED,
        ListItemFlag.CANCELLED,
        ListItemFlag.PRESCRIBED,
        ListItemFlag.CEASED,
        ListItemFlag.SUSPENDED,
    }
)
_STOP_STATUSES = frozenset({MedicationStatus.STOPPED, MedicationStatus.ON_HOLD, MedicationStatus.CANCELLED})
_INACTIVE_ALLERGY = frozenset({"inactive", "resolved"})
_NOT_TRUE = frozenset({"refuted", "entered-in-error"})
_ALLERGY_CATEGORIES = frozenset({"medication", "food", "environment", "biologic"})


def parse_bundle(raw: bytes | str | dict[str, Any]) -> TransitionOfCare:
    """Validate a FHIR R4 bundle and map it to a TransitionOfCare; raises BundleError naming resource and field."""
    return _BundleReader(load_bundle(raw)).transition_of_care()


class _BundleReader:
    def __init__(self, bundle: Bundle) -> None:
        self.resources: list[FHIRAbstractModel] = []
        self._by_reference: dict[str, FHIRAbstractModel] = {}
        for entry in bundle.entry or ():
            resource = entry.resource
            if resource is None:
                continue
            self.resources.append(resource)
            if entry.fullUrl:
                self._by_reference[entry.fullUrl] = resource
            if resource.id:
                self._by_reference[f"{resource.get_resource_type()}/{resource.id}"] = resource
                if not entry.fullUrl:
                    self._by_reference[f"urn:uuid:{resource.id}"] = resource

    def of_type(self, resource_type: str) -> list[Any]:
        return [r for r in self.resources if r.get_resource_type() == resource_type]

    def resolve(self, reference: Reference | None, container: Any = None) -> Any:
        ref = reference.reference if reference is not None else None
        if not ref:
            return None
        if ref.startswith("#"):
            return next((c for c in (container.contained or ()) if c.id == ref[1:]), None) if container else None
        if ref in self._by_reference:
            return self._by_reference[ref]
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        return self._by_reference.get("/".join(parts[-2:])) if len(parts) >= 2 else None

    # --- the transition ---------------------------------------------------------------------------------------

    def transition_of_care(self) -> TransitionOfCare:
        patient = self._patient()
        encounter = self._encounter()
        admitted_at = _aware(encounter.period.start) if encounter and encounter.period else None
        discharged_at = _aware(encounter.period.end) if encounter and encounter.period else None
        home, discharge = self._medication_lists(discharged_at)
        return TransitionOfCare(
            patient=_demographics(patient),
            encounter_id=encounter.id if encounter else None,
            admitted_at=admitted_at,
            discharged_at=discharged_at,
            facility=_reference_label(encounter.serviceProvider) if encounter else None,
            care_team=CareTeam(
                attending_physician_id=_attending(encounter),
                primary_care_physician_id=_first_reference_id(patient.generalPractitioner),
            ),
            home_medications=tuple(home),
            discharge_medications=tuple(discharge),
            conditions=tuple(self._conditions()),
            allergies=tuple(self._allergies()),
            observations=tuple(self._observations()),
            source_format="fhir-r4",
        )

    def _patient(self) -> Any:
        patients = self.of_type("Patient")
        if not patients:
            raise BundleError("Bundle", "entry", "no Patient resource")
        if len({p.id for p in patients}) > 1:
            ids = ", ".join(sorted(str(p.id) for p in patients))
            raise BundleError("Bundle", "entry", f"more than one Patient ({ids}); one bundle per patient")
        return patients[0]

    def _encounter(self) -> Any:
        encounters = self.of_type("Encounter")
        for medication_list in self._lists(codes.DISCHARGE_MEDICATIONS_LIST) + self._lists(codes.HOME_MEDICATIONS_LIST):
            referenced = self.resolve(medication_list.encounter)
            if referenced is not None and referenced.get_resource_type() == "Encounter":
                return referenced
        if len(encounters) <= 1:
            return encounters[0] if encounters else None
        # Several encounters and no list naming one: the latest inpatient stay, else the latest contact.
        inpatient = [e for e in encounters if e.class_fhir is not None and e.class_fhir.code == "IMP"]
        return max(inpatient or encounters, key=_encounter_start)

    # --- medications ------------------------------------------------------------------------------------------

    def _lists(self, loinc_code: str) -> list[Any]:
        return [
            resource
            for resource in self.of_type("List")
            if resource.code is not None
            and any(c.system == codes.LOINC and c.code == loinc_code for c in resource.code.coding or ())
        ]

    def _medication_lists(self, discharged_at: datetime | None) -> tuple[list[MedicationEntry], list[MedicationEntry]]:
        home_lists = self._lists(codes.HOME_MEDICATIONS_LIST)
        discharge_lists = self._lists(codes.DISCHARGE_MEDICATIONS_LIST)
        listed: set[int] = set()
        home = self._list_entries(home_lists, listed)
        discharge = self._list_entries(discharge_lists, listed)
        if not home_lists:
            home = [
                entry
                for statement in self.of_type("MedicationStatement")
                if id(statement) not in listed and statement.status in ("active", "intended")
                for entry in self._entry(statement, None)
            ]
        if not discharge_lists:
            requests = [r for r in self.of_type("MedicationRequest") if id(r) not in listed]
            at_discharge = [r for r in requests if _is_discharge_request(r, discharged_at)]
            # No discharge list of any kind: the active orders are the patient's current list.
            chosen = at_discharge or [r for r in requests if r.status == "active"]
            discharge = [entry for request in chosen for entry in self._entry(request, None)]
        return home, discharge

    def _list_entries(self, lists: Iterable[Any], listed: set[int]) -> list[MedicationEntry]:
        entries: list[MedicationEntry] = []
        for medication_list in lists:
            list_label = _label(medication_list)
            for index, list_entry in enumerate(medication_list.entry or ()):
                if list_entry.deleted:
                    continue
                item = self.resolve(list_entry.item, medication_list)
                field = f"entry[{index}].item"
                if item is None:
                    target = list_entry.item.reference if list_entry.item else None
                    raise BundleError(list_label, field, f"reference {target!r} is not in the bundle")
                if item.get_resource_type() not in ("MedicationStatement", "MedicationRequest"):
                    raise BundleError(
                        list_label,
                        field,
                        f"expected a MedicationStatement or MedicationRequest, got {item.get_resource_type()}",
                    )
                listed.add(id(item))
                flag = _list_item_flag(list_entry.flag, list_label, f"entry[{index}].flag")
                entries.extend(self._entry(item, flag))
        return entries

    def _entry(self, resource: Any, flag: ListItemFlag | None) -> list[MedicationEntry]:
        """The resource as a MedicationEntry; none for an entered-in-error record, which was never true."""
        if resource.status == "entered-in-error":
            return []
        label = _label(resource)
        is_request = resource.get_resource_type() == "MedicationRequest"
        concept, concept_field = self._medication_concept(resource, label)
        text, rxnorm_code = _medication_text(concept, label, concept_field)
        dosages = resource.dosageInstruction if is_request else resource.dosage
        status = _MEDICATION_STATUS.get(resource.status or "unknown", MedicationStatus.UNKNOWN)
        reasons = resource.statusReason if not is_request else [resource.statusReason]
        status_reason = next((t for t in (_concept_text(r) for r in reasons or () if r) if t), None)
        change_documented = flag in _DOCUMENTING_FLAGS or (status in _STOP_STATUSES and status_reason is not None)
        return [
            MedicationEntry(
                entry_id=resource.id,
                text=text,
                rxnorm_code=rxnorm_code,
                status=status,
                status_reason=status_reason,
                list_flag=flag,
                change_documented=change_documented,
                **_dosage_fields(dosages[0] if dosages else None),
            )
        ]

    def _medication_concept(self, resource: Any, label: str) -> tuple[CodeableConcept | None, str]:
        if resource.medicationCodeableConcept is not None:
            return resource.medicationCodeableConcept, "medicationCodeableConcept"
        medication = self.resolve(resource.medicationReference, resource)
        if medication is None or medication.get_resource_type() != "Medication":
            target = resource.medicationReference.reference if resource.medicationReference else None
            raise BundleError(label, "medicationReference", f"{target!r} is not a Medication in the bundle")
        return medication.code, "medicationReference.code"

    # --- clinical context -------------------------------------------------------------------------------------

    def _conditions(self) -> Iterable[Condition]:
        """Every condition that is not refuted or in error, with its clinicalStatus: a resolved one is history
        (a past VTE or GI bleed still contraindicates some drugs), and the drug checks tell the two apart."""
        for condition in self.of_type("Condition"):
            status = _first_code(condition.clinicalStatus)
            if _first_code(condition.verificationStatus) in _NOT_TRUE:
                continue
            coding = _preferred_coding(condition.code, (codes.ICD10CM, codes.SNOMED))
            text = _concept_text(condition.code) or (coding.code if coding else None)
            if not text:
                continue
            yield Condition(
                system=coding.system if coding else None,
                code=coding.code if coding else None,
                text=text,
                clinical_status=status or "active",
            )

    def _allergies(self) -> Iterable[Allergy]:
        for allergy in self.of_type("AllergyIntolerance"):
            if (
                _first_code(allergy.clinicalStatus) in _INACTIVE_ALLERGY
                or _first_code(allergy.verificationStatus) in _NOT_TRUE
            ):
                continue
            coding = _preferred_coding(allergy.code, (codes.RXNORM, codes.SNOMED))
            text = _concept_text(allergy.code) or (coding.code if coding else None)
            if not text:
                continue
            category = next((c for c in allergy.category or () if c in _ALLERGY_CATEGORIES), None)
            yield Allergy(
                system=coding.system if coding else None,
                code=coding.code if coding else None,
                text=text,
                category=category,
                criticality=allergy.criticality,
            )

    def _observations(self) -> list[Observation]:
        latest: dict[str, tuple[datetime | None, Observation]] = {}
        for resource in self.of_type("Observation"):
            if resource.status in ("entered-in-error", "cancelled"):
                continue
            observation = _observation(resource)
            if observation is None:
                continue
            coded = observation.code in codes.OBSERVATION_LABELS or observation.code in codes.PATIENT_STATE_LABELS
            key = observation.code if coded else observation.text.lower()
            effective = observation.effective
            previous = latest.get(key)
            if previous is None or _not_before(effective, previous[0]):
                latest[key] = (effective, observation)
        return [observation for _, observation in latest.values()]


# --- helpers --------------------------------------------------------------------------------------------------


def _demographics(patient: Any) -> PatientDemographics:
    if not patient.id:
        raise BundleError(_label(patient), "id", "missing; mtm keys every event by the patient id")
    if not _PATIENT_ID.match(patient.id):
        raise BundleError(_label(patient), "id", f"{patient.id!r} does not match ^[A-Za-z0-9\\-.]{{1,64}}$")
    return PatientDemographics(
        patient_id=patient.id, birth_date=_date(patient.birthDate), sex=patient.gender or "unknown"
    )


def _dosage_fields(dosage: Dosage | None) -> dict[str, Any]:
    if dosage is None:
        return {}
    fields: dict[str, Any] = {}
    quantity = next((d.doseQuantity for d in dosage.doseAndRate or () if d.doseQuantity is not None), None)
    if quantity is not None and quantity.value is not None:
        fields["dose_value"] = float(quantity.value)
        fields["dose_unit"] = quantity.unit or quantity.code
    timing = dosage.timing
    repeat = timing.repeat if timing else None
    as_written = _concept_text(timing.code, prefer_code=True) if timing and timing.code else None
    per_day = None
    if repeat is not None and repeat.period is not None:
        count = repeat.frequency or 1
        as_written = as_written or f"{count} per {_number(repeat.period)} {repeat.periodUnit or 'd'}"
        per_day = frequency_per_day(frequency=count, period=float(repeat.period), period_unit=repeat.periodUnit or "d")
    if as_written is None and dosage.text:
        as_written = dosage.text
    if per_day is None and as_written:
        per_day = frequency_per_day(as_written)
    fields["frequency"] = as_written
    fields["frequency_per_day"] = per_day
    fields["as_needed"] = bool(dosage.asNeededBoolean) or dosage.asNeededCodeableConcept is not None
    fields["route"] = _concept_text(dosage.route) or _first_code(dosage.route)
    return fields


def _medication_text(concept: CodeableConcept | None, label: str, field: str) -> tuple[str, str | None]:
    codings = (concept.coding if concept else None) or ()
    rxnorm = next((c for c in codings if c.system == codes.RXNORM and c.code), None)
    rxnorm_code = rxnorm.code if rxnorm and _RXNORM_CODE.match(rxnorm.code) else None
    text = (concept.text if concept else None) or (rxnorm.display if rxnorm else None)
    text = text or next((c.display for c in codings if c.display), None)
    if not text and rxnorm_code:
        text = f"RxNorm {rxnorm_code}"
    if not text:
        raise BundleError(label, field, "no text, coding display or RxNorm code to name the medication")
    return text.strip(), rxnorm_code


def _observation(resource: Any) -> Observation | None:
    concept = resource.code
    loinc = next((c for c in concept.coding or () if c.system == codes.LOINC and c.code), None)
    label = _concept_text(concept)
    effective = _aware(resource.effectiveDateTime or resource.effectiveInstant or resource.issued)
    if effective is None and resource.effectivePeriod is not None:
        effective = _aware(resource.effectivePeriod.end or resource.effectivePeriod.start)
    if loinc is not None and loinc.code in codes.OBSERVATION_LABELS:
        quantity = resource.valueQuantity
        if quantity is None or quantity.value is None:
            return None
        return Observation(
            system=codes.LOINC,
            code=loinc.code,
            text=label or codes.OBSERVATION_LABELS[loinc.code],
            value=float(quantity.value),
            unit=quantity.unit or quantity.code,
            effective=effective,
        )
    if loinc is not None and loinc.code in codes.PATIENT_STATE_LABELS:
        value_text = resource.valueString or _concept_text(resource.valueCodeableConcept)
        if not value_text:
            return None
        return Observation(
            system=codes.LOINC,
            code=loinc.code,
            text=label or codes.PATIENT_STATE_LABELS[loinc.code],
            value_text=value_text,
            effective=effective,
        )
    if label and _PHARMACOGENE.match(label):
        value_text = resource.valueString or _concept_text(resource.valueCodeableConcept)
        if not value_text:
            return None
        coding = (concept.coding or [None])[0]
        return Observation(
            system=coding.system if coding else None,
            code=coding.code if coding else None,
            text=label,
            value_text=value_text,
            effective=effective,
        )
    return None


def _is_discharge_request(request: Any, discharged_at: datetime | None) -> bool:
    for category in request.category or ():
        if any(
            c.code == "discharge" and c.system in (codes.MEDICATION_REQUEST_CATEGORY, None)
            for c in category.coding or ()
        ):
            return True
    authored = _aware(request.authoredOn)
    return discharged_at is not None and authored is not None and authored >= discharged_at


def _list_item_flag(concept: CodeableConcept | None, label: str, field: str) -> ListItemFlag | None:
    for coding in (concept.coding if concept else None) or ():
        if coding.system in (codes.LIST_ITEM_FLAG, None):
            try:
                return ListItemFlag(coding.code)
            except ValueError:
                if coding.system == codes.LIST_ITEM_FLAG:
                    raise BundleError(label, field, f"{coding.code!r} is not a list-item-flag code (01-06)") from None
    return None


def _attending(encounter: Any) -> str | None:
    for participant in (encounter.participant if encounter else None) or ():
        types = participant.type or ()
        if any(c.code == "ATND" for t in types for c in t.coding or ()):
            return _reference_id(participant.individual)
    return None


def _encounter_start(encounter: Any) -> datetime:
    start = _aware(encounter.period.start) if encounter.period else None
    return start or datetime.min.replace(tzinfo=UTC)


def _label(resource: Any) -> str:
    return f"{resource.get_resource_type()}/{resource.id}" if resource.id else resource.get_resource_type()


def _reference_id(reference: Reference | None) -> str | None:
    """The id part of `Practitioner/xyz`, `urn:uuid:xyz` or a full URL."""
    if reference is None or not reference.reference:
        return None
    ref = reference.reference.split("/_history/")[0].rstrip("/")
    if ref.startswith("urn:uuid:") or ref.startswith("urn:oid:"):
        return ref.split(":")[-1]
    return ref.split("/")[-1] or None


def _reference_label(reference: Reference | None) -> str | None:
    if reference is None:
        return None
    return reference.display or _reference_id(reference)


def _first_reference_id(references: list[Reference] | None) -> str | None:
    references = references or []
    practitioner = next((r for r in references if "Practitioner/" in (r.reference or "")), None)
    return _reference_id(practitioner or (references[0] if references else None))


def _concept_text(concept: CodeableConcept | None, *, prefer_code: bool = False) -> str | None:
    if concept is None:
        return None
    if concept.text:
        return concept.text
    for coding in concept.coding or ():
        if prefer_code and coding.code:
            return coding.code
        if coding.display:
            return coding.display
    return None


def _first_code(concept: CodeableConcept | None) -> str | None:
    if concept is None:
        return None
    return next((c.code for c in concept.coding or () if c.code), None)


def _preferred_coding(concept: CodeableConcept | None, systems: tuple[str, ...]) -> Any:
    codings = [c for c in (concept.coding if concept else None) or () if c.code]
    for system in systems:
        match = next((c for c in codings if c.system == system), None)
        if match is not None:
            return match
    return codings[0] if codings else None


def _aware(value: datetime | date | str | None) -> datetime | None:
    """FHIR dateTime as an aware datetime; partial dates count from their first day, naive times as UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    day = value if isinstance(value, date) else _date(value)
    return datetime(day.year, day.month, day.day, tzinfo=UTC) if day else None


def _date(value: date | str | None) -> date | None:
    if value is None or isinstance(value, date):
        return value.date() if isinstance(value, datetime) else value
    parts = [int(p) for p in value.split("-")[:3]]
    return date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)


def _not_before(candidate: datetime | None, current: datetime | None) -> bool:
    if current is None:
        return True
    return candidate is not None and candidate >= current


def _number(value: Decimal | float | int) -> str:
    return f"{float(value):g}"
