"""The personal medication list (PML): current medications with the provenance of every entry."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, computed_field

from mtm.contracts.clinical import MedicationEntry
from mtm.contracts.envelope import Frozen
from mtm.contracts.events import ChangeKind, IngredientDose, ItemStatus, ReconciledItem, Reconciliation
from mtm.contracts.program import Dispense
from mtm.fhir import codes
from mtm.reconciliation.domain.medications import normalized_name
from mtm.reconciliation.domain.reconcile import describe

SourceList = Literal["home", "discharge", "pharmacy"]
# How many fills each entry keeps: a year of monthly fills and then some; older ones are on the log.
FILL_HISTORY = 24

_FLAG_OF_STATUS: dict[ItemStatus, tuple[str, str]] = {
    "continued": ("01", "Unchanged"),
    "changed": ("02", "Changed"),
    "new": ("04", "Prescribed"),
}


class Provenance(Frozen):
    """One event that put or kept the entry on the list, and what it changed."""

    event_id: UUID = Field(description="The MedicationsReconciled (or, for a pharmacy entry, MedicationDispensed).")
    transition_event_id: UUID | None = None
    encounter_id: str | None = None
    source: SourceList = Field(description="The list the entry was taken from.")
    recorded_at: AwareDatetime
    status: ItemStatus
    changes: tuple[ChangeKind, ...] = ()
    documented: bool = False


class Fill(Frozen):
    """A pharmacy fill of the entry's medication (a MedicationDispensed event)."""

    event_id: UUID
    dispense_id: str
    filled_on: date
    days_supply: int
    quantity: float | None = None
    pharmacy_id: str | None = None
    prescriber_id: str | None = None


class MedicationListEntry(Frozen):
    ingredients: tuple[str, ...]
    medication: MedicationEntry
    resolved: bool = True
    formulation: str | None = None
    route: str | None = None
    frequency_per_day: float | None = None
    ingredient_doses: tuple[IngredientDose, ...] = ()
    unresolved_omission: bool = Field(
        default=False,
        description="Kept from the home list: missing at discharge with no documented stop; a pharmacist decides.",
    )
    provenance: tuple[Provenance, ...] = Field(description="Oldest first; the last one is the current state.")
    fills: tuple[Fill, ...] = Field(default=(), description="Pharmacy fills, oldest first (the latest 24).")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last_filled_on(self) -> date | None:
        return self.fills[-1].filled_on if self.fills else None

    @property
    def last_change(self) -> Provenance:
        return self.provenance[-1]

    @property
    def match_key(self) -> tuple[str, ...]:
        return self.ingredients or ("?" + normalized_name(self.medication.text),)


class MedicationList(Frozen):
    """What the patient takes now, as the reconciled transitions of care say."""

    patient_id: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    entries: tuple[MedicationListEntry, ...] = ()
    updated_at: AwareDatetime | None = None


def apply_to_medication_list(
    current: MedicationList | None, rec: Reconciliation, *, event_id: UUID, recorded_at: datetime
) -> MedicationList:
    """The list after a reconciliation: the reconciled discharge list, with history carried over per medication.

    A reconciled transition yields a complete list, so earlier entries it does not mention are dropped.
    A home medication missing at discharge without a documented stop stays on the list, marked, because
    silently dropping it is the very error reconciliation exists to catch. (Each reconciliation is applied
    once: the projection claims its event id in the same transaction.)
    """
    patient_id = rec.patient.patient_id
    if current is not None and current.patient_id != patient_id:
        raise ValueError(f"medication list of {current.patient_id} cannot take a reconciliation of {patient_id}")
    history: dict[tuple[str, ...], list[MedicationListEntry]] = {}
    for previous in current.entries if current else ():
        history.setdefault(previous.match_key, []).append(previous)

    entries = []
    for item in rec.items:
        kept = _kept_entry(item)
        if kept is None:
            continue
        medication, source = kept
        omission = item.discharge is None
        step = Provenance(
            event_id=event_id,
            transition_event_id=rec.transition_event_id,
            encounter_id=rec.encounter_id,
            source=source,
            recorded_at=recorded_at,
            status=item.status,
            changes=item.changes,
            documented=item.documented,
        )
        entry = MedicationListEntry(
            ingredients=item.ingredients,
            medication=medication,
            resolved=item.resolved,
            formulation=item.formulation,
            route=item.route,
            frequency_per_day=item.frequency_per_day,
            ingredient_doses=item.ingredient_doses,
            unresolved_omission=omission,
            provenance=(step,),
        )
        earlier = history.get(entry.match_key)
        if earlier:
            before = earlier.pop(0)
            entry = entry.model_copy(update={"provenance": (*before.provenance, step), "fills": before.fills})
        entries.append(entry)
    entries.sort(key=list_order)
    return MedicationList(patient_id=patient_id, entries=tuple(entries), updated_at=recorded_at)


def apply_fill(
    current: MedicationList | None, patient_id: str, dispense: Dispense, *, event_id: UUID, recorded_at: datetime
) -> MedicationList:
    """The list after a pharmacy fill: the fill joins the entry of the same medication (its last fill date and
    history), or the medication joins the list from the pharmacy. A fill seen before changes nothing."""
    if current is not None and current.patient_id != patient_id:
        raise ValueError(f"medication list of {current.patient_id} cannot take a fill of {patient_id}")
    fill = as_fill(dispense, event_id)
    key = fill_key(dispense)
    entries = list(current.entries) if current else []
    position = next((n for n, e in enumerate(entries) if e.match_key == key), None)
    if position is None:
        entries.append(pharmacy_entry(dispense, fill, recorded_at=recorded_at))
        entries.sort(key=list_order)
    else:
        entry = entries[position]
        fills = with_fill(entry.fills, fill)
        if fills is None:
            return current  # type: ignore[return-value]
        entries[position] = entry.model_copy(update={"fills": fills})
    updated = max(recorded_at, current.updated_at) if current and current.updated_at else recorded_at
    return MedicationList(patient_id=patient_id, entries=tuple(entries), updated_at=updated)


def list_order(entry: MedicationListEntry) -> tuple[str, str]:
    """Where an entry stands on the list (entries that tie keep the order they had)."""
    return " / ".join(entry.match_key).lower(), entry.medication.text.lower()


def as_fill(dispense: Dispense, event_id: UUID) -> Fill:
    return Fill(
        event_id=event_id,
        dispense_id=dispense.dispense_id,
        filled_on=dispense.filled_on,
        days_supply=dispense.days_supply,
        quantity=dispense.quantity,
        pharmacy_id=dispense.pharmacy_id,
        prescriber_id=dispense.prescriber_id,
    )


def pharmacy_entry(dispense: Dispense, fill: Fill, *, recorded_at: datetime) -> MedicationListEntry:
    """The entry a fill of a medication not on the list adds to it."""
    step = Provenance(event_id=fill.event_id, source="pharmacy", recorded_at=recorded_at, status="new")
    return MedicationListEntry(
        ingredients=tuple(dispense.ingredients),
        medication=dispense.medication,
        resolved=bool(dispense.ingredients),
        provenance=(step,),
        fills=(fill,),
    )


def fill_key(dispense: Dispense) -> tuple[str, ...]:
    """The `match_key` of the entry a fill joins: the first entry of the list with it."""
    return tuple(dispense.ingredients) or ("?" + normalized_name(dispense.medication.text),)


def with_fill(fills: tuple[Fill, ...], fill: Fill) -> tuple[Fill, ...] | None:
    """An entry's fills with one more, oldest first, the latest FILL_HISTORY kept; None for a fill seen before."""
    if any(f.dispense_id == fill.dispense_id for f in fills):
        return None
    return tuple(sorted((*fills, fill), key=lambda f: (f.filled_on, f.dispense_id))[-FILL_HISTORY:])


def _kept_entry(item: ReconciledItem) -> tuple[MedicationEntry, SourceList] | None:
    if item.status != "stopped" and item.discharge is not None:
        return item.discharge, "discharge"
    if item.status == "stopped" and item.discharge is None and not item.documented and item.home is not None:
        return item.home, "home"
    return None


def to_fhir_list(ml: MedicationList) -> dict[str, Any]:
    """The list as a FHIR R4 `List` (working, current) with contained MedicationStatements."""
    subject = {"reference": f"Patient/{ml.patient_id}"}
    contained: list[dict[str, Any]] = []
    list_entries: list[dict[str, Any]] = []
    for number, entry in enumerate(ml.entries, start=1):
        statement_id = f"med{number}"
        contained.append(_medication_statement(statement_id, entry, subject))
        list_entry: dict[str, Any] = {
            "item": {"reference": f"#{statement_id}"},
            "date": entry.last_change.recorded_at.isoformat(),
        }
        flag = None if entry.unresolved_omission else _FLAG_OF_STATUS.get(entry.last_change.status)
        if flag is not None:
            list_entry["flag"] = {"coding": [{"system": codes.LIST_ITEM_FLAG, "code": flag[0], "display": flag[1]}]}
        list_entries.append(list_entry)
    resource: dict[str, Any] = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "title": "Personal medication list",
        "code": {
            "coding": [
                {
                    "system": codes.LOINC,
                    "code": codes.HOME_MEDICATIONS_LIST,
                    "display": "History of Medication use Narrative",
                }
            ]
        },
        "subject": subject,
    }
    if ml.updated_at is not None:
        resource["date"] = ml.updated_at.isoformat()
    if contained:
        resource["contained"] = contained
        resource["entry"] = list_entries
    else:
        resource["emptyReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}]
        }
    return resource


def _medication_statement(statement_id: str, entry: MedicationListEntry, subject: dict[str, str]) -> dict[str, Any]:
    medication = entry.medication
    concept: dict[str, Any] = {"text": medication.text}
    if medication.rxnorm_code:
        concept["coding"] = [{"system": codes.RXNORM, "code": medication.rxnorm_code}]
    dosage: dict[str, Any] = {"text": describe(medication), "asNeededBoolean": medication.as_needed}
    if medication.frequency:
        dosage["timing"] = {"code": {"text": medication.frequency}}
    if medication.route:
        dosage["route"] = {"text": medication.route}
    if medication.dose_value is not None:
        quantity: dict[str, Any] = {"value": medication.dose_value}
        if medication.dose_unit:
            quantity["unit"] = medication.dose_unit
        dosage["doseAndRate"] = [{"doseQuantity": quantity}]
    statement: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": statement_id,
        "status": "active",
        "medicationCodeableConcept": concept,
        "subject": subject,
        "dateAsserted": entry.last_change.recorded_at.isoformat(),
        "dosage": [dosage],
    }
    if entry.fills:
        last = entry.fills[-1]
        statement["effectivePeriod"] = {"start": entry.fills[0].filled_on.isoformat()}
        statement["informationSource"] = {"display": f"pharmacy fill {last.filled_on.isoformat()}"}
    if entry.unresolved_omission:
        statement["note"] = [
            {"text": "On the home list but not on the discharge list, with no documented stop; to be reviewed."}
        ]
    return statement
