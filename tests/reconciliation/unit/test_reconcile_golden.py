"""Golden reconciliation cases: every item status, every discrepancy type, and differences that are not ones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from reconciliation.unit.toc_builders import med, toc_bundle

from mtm.contracts.events import Reconciliation
from mtm.fhir import parse_bundle
from mtm.reconciliation.domain import reconcile

pytestmark = pytest.mark.unit

TRANSITION = uuid.UUID("00000000-0000-4000-8000-000000000001")


@dataclass(frozen=True)
class Case:
    name: str
    home: list[dict]
    discharge: list[dict]
    items: list[tuple[tuple[str, ...], str, tuple[str, ...], bool]]
    discrepancies: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


ATORVASTATIN = med("Atorvastatin 40 MG Oral Tablet", rxnorm="617312", dose=1, unit="tablet", timing="QD", route="PO")
METOPROLOL_BID = med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", timing="BID", route="oral")
LISINOPRIL_10 = med("Lisinopril 10 MG Oral Tablet", dose=1, unit="tablet", timing="daily", route="PO")
WARFARIN = med("Warfarin Sodium 5 MG Oral Tablet", rxnorm="855332", dose=1, unit="tablet", timing="QD", route="PO")
FUROSEMIDE_PO = med("Furosemide 40 MG Oral Tablet", dose=40, unit="mg", timing="QD", route="PO")

CASES = [
    Case(
        "brand and generic of the same drug and strength",
        home=[ATORVASTATIN],
        discharge=[med("Lipitor 40 mg", dose=1, unit="tablet", timing="once daily", route="by mouth", flag="01")],
        items=[(("atorvastatin",), "continued", (), True)],
    ),
    Case(
        "BID written as every 12 hours",
        home=[METOPROLOL_BID],
        discharge=[med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", timing="every 12 hours")],
        items=[(("metoprolol",), "continued", (), False)],
    ),
    Case(
        "BID written as timing.repeat 2 per 1 d",
        home=[METOPROLOL_BID],
        discharge=[med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", repeat=(2, 1, "d"))],
        items=[(("metoprolol",), "continued", (), False)],
    ),
    Case(
        "BID written as Q12H",
        home=[METOPROLOL_BID],
        discharge=[med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", timing="Q12H", route="PO")],
        items=[(("metoprolol",), "continued", (), False)],
    ),
    Case(
        "0.5 g is 500 mg",
        home=[med("Amoxicillin 500 MG Oral Capsule", dose=0.5, unit="g", timing="TID")],
        discharge=[med("Amoxicillin 500 MG Oral Capsule", dose=500, unit="mg", timing="three times daily")],
        items=[(("amoxicillin",), "continued", (), False)],
    ),
    Case(
        "two 325 mg tablets are 650 mg",
        home=[med("Acetaminophen 325 MG Oral Tablet", dose=2, unit="tablet", timing="Q6H", prn=True)],
        discharge=[med("Acetaminophen 325 MG Oral Tablet", dose=650, unit="mg", timing="every 6 hours", prn=True)],
        items=[(("acetaminophen",), "continued", (), False)],
    ),
    Case(
        "documented dose change (flag 02)",
        home=[LISINOPRIL_10],
        discharge=[med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily", flag="02")],
        items=[(("lisinopril",), "changed", ("dose",), True)],
    ),
    Case(
        "documented stop: status stopped with a reason",
        home=[WARFARIN],
        discharge=[med("Warfarin Sodium 5 MG Oral Tablet", status="stopped", reason="GI bleed during admission")],
        items=[(("warfarin",), "stopped", (), True)],
    ),
    Case(
        "documented stop: flag 05 ceased",
        home=[WARFARIN],
        discharge=[med("Warfarin Sodium 5 MG Oral Tablet", flag="05")],
        items=[(("warfarin",), "stopped", (), True)],
    ),
    Case(
        "documented hold: on-hold with a reason",
        home=[WARFARIN],
        discharge=[med("Warfarin Sodium 5 MG Oral Tablet", status="on-hold", reason="Procedure next week")],
        items=[(("warfarin",), "stopped", (), True)],
    ),
    Case(
        "documented new medication (flag 04)",
        home=[],
        discharge=[med("Apixaban 5 MG Oral Tablet", dose=1, unit="tablet", timing="BID", flag="04")],
        items=[(("apixaban",), "new", (), True)],
    ),
    Case(
        "undocumented new medication is an item, not a discrepancy",
        home=[],
        discharge=[med("Pantoprazole 40 MG Delayed Release Oral Tablet", dose=1, unit="tablet", timing="daily")],
        items=[(("pantoprazole",), "new", (), False)],
    ),
    Case(
        "documented switch: tartrate ceased, succinate prescribed",
        home=[METOPROLOL_BID],
        discharge=[
            med("Metoprolol tartrate 25 MG Oral Tablet", flag="05"),
            med(
                "Metoprolol succinate 50 MG Extended Release Oral Tablet", dose=1, unit="tablet", timing="QD", flag="04"
            ),
        ],
        items=[(("metoprolol",), "new", (), True), (("metoprolol",), "stopped", (), True)],
    ),
    Case(
        "metoprolol tartrate to succinate without documentation",
        home=[med("Metoprolol tartrate 50 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
        discharge=[
            med("Metoprolol succinate 50 MG Extended Release Oral Tablet", dose=1, unit="tablet", timing="daily")
        ],
        items=[(("metoprolol",), "changed", ("formulation",), False)],
        discrepancies=[("formulation", ("metoprolol",))],
    ),
    Case(
        "immediate to extended release without documentation",
        home=[med("Metformin 500 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
        discharge=[med("Metformin 500 MG Extended Release Oral Tablet", dose=1, unit="tablet", timing="daily")],
        items=[(("metformin",), "changed", ("formulation",), False)],
        discrepancies=[("formulation", ("metformin",))],
    ),
    Case(
        "omission: home medication missing at discharge",
        home=[med("Simvastatin 20 MG Oral Tablet", dose=1, unit="tablet", timing="QHS"), LISINOPRIL_10],
        discharge=[med("Lisinopril 10 MG Oral Tablet", dose=1, unit="tablet", timing="daily", flag="01")],
        items=[(("lisinopril",), "continued", (), True), (("simvastatin",), "stopped", (), False)],
        discrepancies=[("omission", ("simvastatin",))],
    ),
    Case(
        "stopped at discharge without a reason is an undocumented stop",
        home=[WARFARIN],
        discharge=[med("Warfarin Sodium 5 MG Oral Tablet", status="stopped")],
        items=[(("warfarin",), "stopped", (), False)],
        discrepancies=[("omission", ("warfarin",))],
    ),
    Case(
        "duplication: the same ingredient twice at discharge (brand and generic)",
        home=[ATORVASTATIN],
        discharge=[
            med("Atorvastatin 40 MG Oral Tablet", dose=1, unit="tablet", timing="QD", flag="01"),
            med("Lipitor 20 mg", dose=1, unit="tablet", timing="QD"),
        ],
        items=[(("atorvastatin",), "continued", (), True), (("atorvastatin",), "new", (), False)],
        discrepancies=[("duplication", ("atorvastatin",))],
    ),
    Case(
        "duplication through a combination product",
        home=[],
        discharge=[
            med("Acetaminophen 325 MG / oxyCODONE Hydrochloride 5 MG Oral Tablet", dose=1, unit="tablet", timing="Q6H"),
            med("Acetaminophen 500 MG Oral Tablet", dose=2, unit="tablet", timing="Q6H", prn=True),
        ],
        items=[(("acetaminophen",), "new", (), False), (("acetaminophen", "oxycodone"), "new", (), False)],
        discrepancies=[("duplication", ("acetaminophen",))],
    ),
    Case(
        "commission: ceased and still active on the discharge list",
        home=[WARFARIN],
        discharge=[
            med("Warfarin Sodium 5 MG Oral Tablet", flag="05"),
            med("Warfarin Sodium 5 MG Oral Tablet", rxnorm="855332", dose=1, unit="tablet", timing="QD", route="PO"),
        ],
        items=[(("warfarin",), "continued", (), False), (("warfarin",), "stopped", (), True)],
        discrepancies=[("commission", ("warfarin",))],
    ),
    Case(
        "commission: stopped at home and restarted at discharge",
        home=[med("Ibuprofen 400 MG Oral Tablet", status="stopped", reason="Acute kidney injury")],
        discharge=[med("Ibuprofen 400 MG Oral Tablet", dose=1, unit="tablet", timing="TID", prn=True)],
        items=[(("ibuprofen",), "new", (), False), (("ibuprofen",), "stopped", (), True)],
        discrepancies=[("commission", ("ibuprofen",))],
    ),
    Case(
        "route change PO to IV",
        home=[FUROSEMIDE_PO],
        discharge=[med("Furosemide 40 MG", dose=40, unit="mg", timing="QD", route="IV")],
        items=[(("furosemide",), "changed", ("route",), False)],
        discrepancies=[("route", ("furosemide",))],
    ),
    Case(
        "undocumented dose change",
        home=[LISINOPRIL_10],
        discharge=[med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
        items=[(("lisinopril",), "changed", ("dose",), False)],
        discrepancies=[("dose", ("lisinopril",))],
    ),
    Case(
        "undocumented strength change with no dose written",
        home=[med("Simvastatin 20 MG Oral Tablet")],
        discharge=[med("Simvastatin 40 MG Oral Tablet")],
        items=[(("simvastatin",), "changed", ("dose",), False)],
        discrepancies=[("dose", ("simvastatin",))],
    ),
    Case(
        "flag 01 unchanged contradicts a frequency change",
        home=[METOPROLOL_BID],
        discharge=[med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", timing="TID", flag="01")],
        items=[(("metoprolol",), "changed", ("frequency",), False)],
        discrepancies=[("frequency", ("metoprolol",))],
    ),
    Case(
        "scheduled to as needed is a frequency change",
        home=[med("Oxycodone 5 MG Oral Tablet", dose=1, unit="tablet", timing="Q6H")],
        discharge=[med("Oxycodone 5 MG Oral Tablet", dose=1, unit="tablet", timing="Q6H", prn=True)],
        items=[(("oxycodone",), "changed", ("frequency",), False)],
        discrepancies=[("frequency", ("oxycodone",))],
    ),
    Case(
        "unresolved medication matched by its name",
        home=[med("Zyqorblast 10 mg", dose=1, unit="tablet", timing="daily")],
        discharge=[med("zyqorblast 10 MG", dose=1, unit="tablet", timing="QD")],
        items=[((), "continued", (), False)],
    ),
]


def _reconcile(case: Case) -> Reconciliation:
    return reconcile(parse_bundle(toc_bundle(case.home, case.discharge)), TRANSITION)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(case: Case) -> None:
    rec = _reconcile(case)

    assert [(i.ingredients, i.status, i.changes, i.documented) for i in rec.items] == case.items
    assert [(d.type, d.ingredients) for d in rec.discrepancies] == case.discrepancies
    for discrepancy in rec.discrepancies:
        assert discrepancy.documented is False
        assert discrepancy.message and "p1" not in discrepancy.message


def test_unresolved_items_say_so() -> None:
    rec = _reconcile(CASES[-1])

    assert rec.items[0].resolved is False
    assert rec.items[0].ingredient_doses == ()


def test_a_mixed_discharge_reconciles_every_item_and_discrepancy() -> None:
    home = [ATORVASTATIN, METOPROLOL_BID, WARFARIN, FUROSEMIDE_PO, LISINOPRIL_10, med("Aspirin 81 MG Oral Tablet")]
    discharge = [
        med("Lipitor 40 mg", dose=1, unit="tablet", timing="daily", flag="01"),
        med("Metoprolol succinate 50 MG Extended Release Oral Tablet", dose=1, unit="tablet", timing="QD"),
        med("Warfarin Sodium 5 MG Oral Tablet", status="stopped", reason="Bleeding"),
        med("Furosemide 40 MG Injection", dose=40, unit="mg", timing="BID", route="IV"),
        med("Apixaban 5 MG Oral Tablet", dose=1, unit="tablet", timing="BID", flag="04"),
    ]
    rec = _reconcile(Case("mixed", home, discharge, []))

    statuses = {(i.ingredients, i.status) for i in rec.items}
    assert statuses == {
        (("apixaban",), "new"),
        (("aspirin",), "stopped"),
        (("atorvastatin",), "continued"),
        (("furosemide",), "changed"),
        (("lisinopril",), "stopped"),
        (("metoprolol",), "changed"),
        (("warfarin",), "stopped"),
    }
    assert [(d.type, d.ingredients) for d in rec.discrepancies] == [
        ("omission", ("aspirin",)),
        ("omission", ("lisinopril",)),
        ("formulation", ("metoprolol",)),
        ("route", ("furosemide",)),
        ("frequency", ("furosemide",)),
        ("frequency", ("metoprolol",)),
    ]


def test_output_order_does_not_depend_on_input_order() -> None:
    home = [ATORVASTATIN, METOPROLOL_BID, WARFARIN, LISINOPRIL_10]
    discharge = [
        med("Lipitor 40 mg", dose=1, unit="tablet", timing="daily"),
        med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
        med("Apixaban 5 MG Oral Tablet", flag="04"),
    ]
    forward = _reconcile(Case("forward", home, discharge, []))
    backward = _reconcile(Case("backward", home[::-1], discharge[::-1], []))

    def strip(rec: Reconciliation) -> list:
        return [
            (i.ingredients, i.status, i.changes, i.home and i.home.text, i.discharge and i.discharge.text)
            for i in rec.items
        ]

    assert strip(forward) == strip(backward)
    assert [d.message for d in forward.discrepancies] == [d.message for d in backward.discrepancies]


def test_items_carry_ingredient_doses_in_canonical_units() -> None:
    home = [med("Acetaminophen 325 MG Oral Tablet", dose=2, unit="tablet", timing="Q6H", prn=True)]
    discharge = [med("Amoxicillin 500 MG Oral Capsule", dose=0.5, unit="g", timing="TID", flag="04")]
    rec = _reconcile(Case("doses", home, discharge, []))

    by_ingredient = {i.ingredients: i for i in rec.items}
    [acetaminophen] = by_ingredient[("acetaminophen",)].ingredient_doses
    assert (acetaminophen.amount, acetaminophen.unit) == (650.0, "mg")
    [amoxicillin] = by_ingredient[("amoxicillin",)].ingredient_doses
    assert (amoxicillin.amount, amoxicillin.unit, amoxicillin.daily_amount) == (500.0, "mg", 1500.0)
    assert by_ingredient[("amoxicillin",)].frequency_per_day == 3
    assert by_ingredient[("amoxicillin",)].route == "oral"


def test_messages_name_both_sides() -> None:
    rec = _reconcile(
        Case(
            "dose",
            [LISINOPRIL_10],
            [med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
            [],
        )
    )

    [discrepancy] = rec.discrepancies
    assert discrepancy.home is not None and discrepancy.home.text == "Lisinopril 10 MG Oral Tablet"
    assert discrepancy.discharge is not None and discrepancy.discharge.text == "Lisinopril 20 MG Oral Tablet"
    assert "10 mg" in discrepancy.message and "20 mg" in discrepancy.message


# --- combinations and daily totals ------------------------------------------------------------------------------

LISINOPRIL_HCTZ = med(
    "Lisinopril 20 MG / Hydrochlorothiazide 12.5 MG Oral Tablet", dose=1, unit="tablet", timing="daily"
)


def test_home_combination_split_into_components_is_one_medication_changing_form() -> None:
    rec = _reconcile(
        Case(
            "split",
            [LISINOPRIL_HCTZ],
            [
                med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
                med("Hydrochlorothiazide 12.5 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
            ],
            [],
        )
    )
    assert sorted((i.ingredients, i.status, i.changes) for i in rec.items) == [
        (("hydrochlorothiazide",), "changed", ("formulation",)),
        (("lisinopril",), "changed", ("formulation",)),
    ]
    assert all(i.home is not None and i.home.text.startswith("Lisinopril 20 MG /") for i in rec.items)
    assert [(d.type, d.ingredients) for d in rec.discrepancies] == [
        ("formulation", ("hydrochlorothiazide", "lisinopril"))
    ]
    assert "double dosing" in rec.discrepancies[0].message
    assert not any(d.type in ("omission", "commission") for d in rec.discrepancies)


def test_dose_change_inside_a_combination_is_reported_for_that_component() -> None:
    rec = _reconcile(
        Case(
            "split with a dose change",
            [LISINOPRIL_HCTZ],
            [
                med("Lisinopril 40 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
                med("Hydrochlorothiazide 12.5 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
            ],
            [],
        )
    )
    assert [(d.type, d.ingredients) for d in rec.discrepancies] == [
        ("dose", ("lisinopril",)),
        ("formulation", ("hydrochlorothiazide", "lisinopril")),
    ]
    dose = rec.discrepancies[0]
    assert "20 mg lisinopril at home" in dose.message and "40 mg lisinopril at discharge" in dose.message
    by_ingredient = {i.ingredients: i for i in rec.items}
    assert by_ingredient[("lisinopril",)].changes == ("dose", "formulation")
    assert by_ingredient[("hydrochlorothiazide",)].changes == ("formulation",)


def test_components_merged_into_a_combination_at_discharge() -> None:
    rec = _reconcile(
        Case(
            "merge",
            [
                med("Losartan Potassium 50 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
                med("Hydrochlorothiazide 12.5 MG Oral Tablet", dose=1, unit="tablet", timing="daily"),
            ],
            [
                med(
                    "Losartan Potassium 50 MG / Hydrochlorothiazide 12.5 MG Oral Tablet",
                    dose=1,
                    unit="tablet",
                    timing="daily",
                )
            ],
            [],
        )
    )
    assert sorted((i.ingredients, i.status) for i in rec.items) == [
        (("hydrochlorothiazide",), "changed"),
        (("losartan",), "changed"),
    ]
    for item in rec.items:
        assert [dose.ingredient for dose in item.ingredient_doses] == list(item.ingredients)
    assert [(d.type, d.ingredients) for d in rec.discrepancies] == [
        ("formulation", ("hydrochlorothiazide", "losartan"))
    ]


def test_combination_with_only_part_of_its_components_is_not_matched() -> None:
    rec = _reconcile(
        Case(
            "partial",
            [LISINOPRIL_HCTZ],
            [med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
            [],
        )
    )
    assert sorted((i.ingredients, i.status) for i in rec.items) == [
        (("hydrochlorothiazide", "lisinopril"), "stopped"),
        (("lisinopril",), "new"),
    ]
    assert [d.type for d in rec.discrepancies] == ["omission"]


def test_same_daily_total_on_a_new_schedule_is_a_frequency_change_not_a_dose_change() -> None:
    rec = _reconcile(
        Case(
            "25 mg BID -> 50 mg daily",
            [med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", timing="BID")],
            [med("Metoprolol tartrate 50 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
            [],
        )
    )
    assert [(i.status, i.changes) for i in rec.items] == [("changed", ("frequency",))]
    assert [d.type for d in rec.discrepancies] == ["frequency"]


def test_different_daily_total_on_a_new_schedule_is_a_dose_change_too() -> None:
    rec = _reconcile(
        Case(
            "25 mg BID -> 100 mg daily",
            [med("Metoprolol tartrate 25 MG Oral Tablet", dose=1, unit="tablet", timing="BID")],
            [med("Metoprolol tartrate 100 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
            [],
        )
    )
    assert [d.type for d in rec.discrepancies] == ["dose", "frequency"]
    assert "per day 50 mg metoprolol at home, 100 mg metoprolol at discharge" in rec.discrepancies[0].message
