"""Personal medication list: applying reconciliations, provenance, replays, and the FHIR List view."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.list import List as FhirList
from reconciliation.unit.toc_builders import med, toc_bundle

from mtm.contracts.events import Reconciliation
from mtm.fhir import parse_bundle
from mtm.reconciliation.domain import MedicationList, apply_to_medication_list, reconcile, to_fhir_list

pytestmark = pytest.mark.unit

FIRST_EVENT = uuid.UUID("00000000-0000-4000-8000-00000000000a")
SECOND_EVENT = uuid.UUID("00000000-0000-4000-8000-00000000000b")
FIRST_AT = datetime(2024, 3, 5, 16, tzinfo=UTC)
SECOND_AT = datetime(2024, 6, 1, 12, tzinfo=UTC)


def _rec(home: list[dict], discharge: list[dict], transition: int = 1) -> Reconciliation:
    return reconcile(parse_bundle(toc_bundle(home, discharge)), uuid.UUID(int=transition))


FIRST = _rec(
    [
        med("Lisinopril 10 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
        med("Warfarin Sodium 5 MG Oral Tablet"),
        med("Simvastatin 20 MG Oral Tablet"),
    ],
    [
        med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily", flag="02"),
        med("Warfarin Sodium 5 MG Oral Tablet", flag="05"),
        med("Apixaban 5 MG Oral Tablet", dose=1, unit="tablet", timing="BID", flag="04"),
    ],
)


def test_first_reconciliation_builds_the_list_with_provenance() -> None:
    ml = apply_to_medication_list(None, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)

    assert ml.patient_id == "p1"
    assert [(e.ingredients, e.medication.text, e.last_change.status, e.last_change.source) for e in ml.entries] == [
        (("apixaban",), "Apixaban 5 MG Oral Tablet", "new", "discharge"),
        (("lisinopril",), "Lisinopril 20 MG Oral Tablet", "changed", "discharge"),
        (("simvastatin",), "Simvastatin 20 MG Oral Tablet", "stopped", "home"),
    ]
    lisinopril = ml.entries[1]
    assert lisinopril.last_change.changes == ("dose",) and lisinopril.last_change.documented
    assert lisinopril.last_change.event_id == FIRST_EVENT
    assert lisinopril.last_change.recorded_at == FIRST_AT
    # The undocumented omission stays until someone decides, flagged as such.
    assert ml.entries[2].unresolved_omission
    assert not lisinopril.unresolved_omission


def test_next_reconciliation_carries_history_and_drops_what_it_stopped() -> None:
    first = apply_to_medication_list(None, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)
    second_rec = _rec(
        [med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily"), med("Apixaban 5 MG Oral Tablet")],
        [
            med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily", flag="01"),
            med("Apixaban 5 MG Oral Tablet", flag="05"),
        ],
        transition=2,
    )

    second = apply_to_medication_list(first, second_rec, event_id=SECOND_EVENT, recorded_at=SECOND_AT)

    [lisinopril] = second.entries
    assert [p.status for p in lisinopril.provenance] == ["changed", "continued"]
    assert [p.event_id for p in lisinopril.provenance] == [FIRST_EVENT, SECOND_EVENT]
    assert second.updated_at == SECOND_AT


def test_another_patients_reconciliation_is_refused() -> None:
    other = MedicationList(patient_id="someone-else")

    with pytest.raises(ValueError, match="someone-else"):
        apply_to_medication_list(other, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)


def test_the_list_is_frozen() -> None:
    ml = apply_to_medication_list(None, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)

    with pytest.raises(ValueError, match="frozen"):
        ml.patient_id = "x"  # type: ignore[misc]


def test_fhir_list_is_valid_r4_with_contained_statements() -> None:
    ml = apply_to_medication_list(None, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)

    resource = to_fhir_list(ml)

    parsed = FhirList.model_validate(resource)
    assert (parsed.status, parsed.mode) == ("current", "working")
    assert parsed.code.coding[0].code == "10160-0"
    assert [c.get_resource_type() for c in parsed.contained] == ["MedicationStatement"] * 3
    assert [e.flag.coding[0].code if e.flag else None for e in parsed.entry] == ["04", "02", None]
    assert resource["contained"][1]["medicationCodeableConcept"]["text"] == "Lisinopril 20 MG Oral Tablet"


def test_empty_fhir_list_says_why() -> None:
    resource = to_fhir_list(MedicationList(patient_id="p1"))

    assert FhirList.model_validate(resource).emptyReason is not None


def test_the_list_round_trips_through_json() -> None:
    ml = apply_to_medication_list(None, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)

    assert MedicationList.model_validate_json(ml.model_dump_json()) == ml


def test_the_stored_form_without_defaults_reads_back_equal() -> None:
    from datetime import date

    from mtm.contracts.clinical import MedicationEntry
    from mtm.contracts.program import Dispense
    from mtm.reconciliation.domain import apply_fill

    ml = apply_to_medication_list(None, FIRST, event_id=FIRST_EVENT, recorded_at=FIRST_AT)
    for number, (text, ingredients) in enumerate(
        [("Warfarin 5", ("warfarin",)), ("Metformin 500", ("metformin",)), ("House blend", ())], start=1
    ):
        fill = Dispense(
            dispense_id=f"rx-{number}",
            medication=MedicationEntry(text=text),
            ingredients=ingredients,
            days_supply=30,
            quantity=30.0 if number == 1 else None,
            filled_on=date(2024, 4, number),
        )
        ml = apply_fill(ml, ml.patient_id, fill, event_id=uuid.UUID(int=number), recorded_at=SECOND_AT)
    stored = ml.model_dump_json(exclude_defaults=True)

    assert MedicationList.model_validate_json(stored) == ml
    assert len(stored) < 0.75 * len(ml.model_dump_json())


def test_a_fill_updates_its_entry_and_an_unlisted_drug_joins_from_the_pharmacy() -> None:
    import uuid
    from datetime import UTC, date, datetime

    from mtm.contracts.clinical import MedicationEntry
    from mtm.contracts.program import Dispense
    from mtm.reconciliation.domain import apply_fill

    def dispense(dispense_id: str, text: str, ingredients: tuple[str, ...], on: date) -> Dispense:
        return Dispense(
            dispense_id=dispense_id,
            medication=MedicationEntry(text=text),
            ingredients=ingredients,
            days_supply=30,
            filled_on=on,
        )

    at = datetime(2026, 1, 5, tzinfo=UTC)
    first = apply_fill(
        None,
        "p1",
        dispense("a", "Atorvastatin 40", ("atorvastatin",), date(2026, 1, 5)),
        event_id=uuid.uuid4(),
        recorded_at=at,
    )
    later = apply_fill(
        first,
        "p1",
        dispense("b", "Lipitor 40", ("atorvastatin",), date(2026, 2, 4)),
        event_id=uuid.uuid4(),
        recorded_at=at,
    )
    again = apply_fill(
        later,
        "p1",
        dispense("b", "Lipitor 40", ("atorvastatin",), date(2026, 2, 4)),
        event_id=uuid.uuid4(),
        recorded_at=at,
    )
    [entry] = later.entries
    assert entry.last_filled_on == date(2026, 2, 4) and [f.dispense_id for f in entry.fills] == ["a", "b"]
    assert entry.provenance[0].source == "pharmacy" and again == later
    with_other = apply_fill(
        later,
        "p1",
        dispense("c", "Metformin 500", ("metformin",), date(2026, 2, 4)),
        event_id=uuid.uuid4(),
        recorded_at=at,
    )
    assert [e.ingredients for e in with_other.entries] == [("atorvastatin",), ("metformin",)]
