"""Re-evaluating a member: quarterly reviews, the year's single opt-out enrolment, adherence only with class fills."""

from __future__ import annotations

from datetime import date

import pytest

from mtm.program.domain.adherence import DispensedFill
from mtm.program.domain.evaluation import MemberState, evaluate, next_quarter, trigger_of
from mtm.program.domain.targeting import ConditionFact, MedicationFact, Plan, TargetingInput
from mtm.program.tables import adherence_tables, targeting_tables

pytestmark = pytest.mark.unit
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
TODAY = date(2025, 5, 20)


def member(**changes) -> MemberState:
    values = {
        "patient_id": "p1",
        "targeting": TargetingInput(
            conditions=[ConditionFact(ICD, code, "active") for code in ("E11.9", "I10", "E78.5")],
            medications=[MedicationFact(f"drug-{n}") for n in range(8)],
        ),
        "fills": (),
        "inputs_seen": 2,
        "inputs_evaluated": 1,
        "last_input": "fill",
        "evaluated_on": date(2025, 2, 1),
        "enrolled_years": frozenset(),
        "adherence_year": None,
        "adherence_below": (),
    }
    return MemberState(**{**values, **changes})


def run(state: MemberState):
    return evaluate(state, TODAY, plan=Plan(), tables=targeting_tables(), adherence_tables=adherence_tables())


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2025, 1, 1), date(2025, 4, 1)),
        (date(2025, 3, 31), date(2025, 4, 1)),
        (date(2025, 11, 5), date(2026, 1, 1)),
    ],
)
def test_the_next_review_is_the_first_day_of_the_next_quarter(day: date, expected: date) -> None:
    assert next_quarter(day) == expected


def test_why_an_evaluation_is_due() -> None:
    assert trigger_of(member(), TODAY) == "fill"
    assert trigger_of(member(last_input="discharge"), TODAY) == "discharge"
    assert trigger_of(member(inputs_evaluated=2), TODAY) == "quarterly"
    assert trigger_of(member(inputs_evaluated=2, evaluated_on=date(2024, 12, 1)), TODAY) == "program-year"


def test_a_targeted_member_is_enrolled_once_a_year_and_one_who_left_is_not_re_enrolled() -> None:
    first = run(member())
    assert first.determination.eligible and first.enrol
    assert first.determination.inputs_considered == 2 and first.adherence is None
    assert not run(member(enrolled_years=frozenset({2025}))).enrol  # enrolled, or opted out, this year
    assert run(member(enrolled_years=frozenset({2024}))).enrol  # a new program year


def test_adherence_is_measured_when_the_year_has_fills_of_a_class_and_remembers_what_was_below() -> None:
    fills = (
        DispensedFill(("atorvastatin",), date(2025, 1, 2), 30),
        DispensedFill(("atorvastatin",), date(2025, 4, 1), 30),
    )
    measured = run(member(fills=fills)).adherence
    assert measured is not None and measured.newly_below == ("statins",)
    again = run(member(fills=fills, adherence_year=2025, adherence_below=("statins",))).adherence
    assert again is not None and again.below_threshold == ("statins",) and again.newly_below == ()
    other = (DispensedFill(("omeprazole",), date(2025, 1, 2), 30),)
    assert run(member(fills=other)).adherence is None
