"""CMS Part D targeting at each boundary: 2 vs 3 diseases, 7 vs 8 drugs, cost around the threshold, DMP alone."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from mtm.program.domain.targeting import (
    ConditionFact,
    CostFact,
    FillFact,
    MedicationFact,
    Plan,
    TargetingInput,
    determine,
)
from mtm.program.tables import targeting_tables

pytestmark = pytest.mark.unit
AS_OF = date(2025, 6, 30)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
THREE = (
    ConditionFact(ICD, "E11.9", "active"),  # diabetes
    ConditionFact(ICD, "I10", "active"),  # hypertension
    ConditionFact(ICD, "E78.5", "active"),  # dyslipidemia
)


def drugs(n: int) -> list[MedicationFact]:
    return [MedicationFact(f"drug-{i}") for i in range(n)]


def decide(record: TargetingInput, plan: Plan | None = None):
    return determine(record, as_of=AS_OF, tables=targeting_tables(), plan=plan)


def test_three_diseases_eight_drugs_at_the_estimated_threshold_is_eligible() -> None:
    result = decide(TargetingInput(conditions=THREE, medications=drugs(8)))
    assert result.eligible and result.basis == "chronic-diseases-drugs-cost"
    assert result.criteria.annual_cost_threshold == 1623
    # Without claims the cost is the plan's estimate: the threshold / 8 per maintenance drug.
    assert result.findings.cost_basis == "estimate" and result.findings.annual_cost == 1623.0
    assert result.findings.chronic_diseases == ("diabetes", "dyslipidemia", "hypertension")
    assert all(reason.endswith(": met") for reason in result.reasons)


def test_two_diseases_are_not_enough_for_a_plan_requiring_three_but_are_for_one_requiring_two() -> None:
    record = TargetingInput(conditions=THREE[:2], medications=drugs(8))
    strict = decide(record)
    assert not strict.eligible and not strict.findings.meets_chronic_diseases
    assert strict.reasons[0] == "2 core chronic diseases (diabetes, hypertension); the plan requires 3: not met"
    assert decide(record, Plan(min_chronic_diseases=2)).eligible


def test_seven_drugs_are_not_eight() -> None:
    result = decide(TargetingInput(conditions=THREE, medications=drugs(7)))
    assert not result.eligible
    assert not result.findings.meets_maintenance_drugs and not result.findings.meets_annual_cost
    assert (
        decide(TargetingInput(conditions=THREE, medications=drugs(7)), Plan(min_maintenance_drugs=7)).eligible is False
    )


@pytest.mark.parametrize(("cost", "eligible"), [(1622.99, False), (1623.00, True), (1623.01, True)])
def test_claim_costs_just_under_and_over_the_threshold(cost: float, eligible: bool) -> None:
    start = AS_OF - timedelta(days=364)
    record = TargetingInput(conditions=THREE, medications=drugs(8), claims=[CostFact(start, cost)])
    result = decide(record)
    assert result.findings.cost_basis == "claims" and result.findings.annual_cost == cost
    assert result.eligible is eligible


def test_claims_over_part_of_a_year_are_projected_to_a_year() -> None:
    record = TargetingInput(conditions=THREE, medications=drugs(8), claims=[CostFact(AS_OF - timedelta(days=182), 900)])
    assert decide(record).findings.annual_cost == round(900 * 365 / 183, 2)


def test_an_at_risk_dmp_beneficiary_is_eligible_alone() -> None:
    result = decide(TargetingInput(drug_management_program_at_risk=True))
    assert result.eligible and result.basis == "drug-management-program"
    assert not result.findings.meets_chronic_diseases and not result.findings.meets_maintenance_drugs
    assert "drug management program" in result.reasons[-1]


def test_only_active_conditions_count_and_two_codes_of_one_disease_count_once() -> None:
    conditions = (
        ConditionFact(ICD, "E11.9", "active"),
        ConditionFact(SNOMED, "44054006", "recurrence"),  # diabetes again, another system
        ConditionFact(ICD, "E119", "relapse"),  # and without its dot
        ConditionFact(ICD, "I10", "resolved"),
        ConditionFact(ICD, "J45.909", "inactive"),
        ConditionFact(ICD, "I13.0", "active"),  # hypertensive heart disease with heart failure: both
    )
    result = decide(TargetingInput(conditions=conditions, medications=drugs(8)))
    assert result.findings.chronic_diseases == ("diabetes", "heart-failure", "hypertension")


def test_short_courses_are_not_maintenance_drugs() -> None:
    record = TargetingInput(
        conditions=THREE,
        medications=[*drugs(6), MedicationFact("amoxicillin", course_days=10)],
        fills=[
            FillFact("ciprofloxacin", AS_OF - timedelta(days=40), 7),
            FillFact("ciprofloxacin", AS_OF - timedelta(days=20), 7),  # two short courses: 14 days
            FillFact("atorvastatin", AS_OF - timedelta(days=10), 30),  # one 30-day fill of a chronic drug
            FillFact("drug-0", AS_OF - timedelta(days=30), 90),  # on the list already: counts once
        ],
    )
    result = decide(record)
    assert "amoxicillin" not in result.findings.maintenance_drugs
    assert "ciprofloxacin" not in result.findings.maintenance_drugs
    assert len(result.findings.maintenance_drugs) == 7 and "atorvastatin" in result.findings.maintenance_drugs


def test_the_year_comes_from_the_data_and_its_row_of_the_table() -> None:
    record = TargetingInput(conditions=THREE, medications=drugs(8))
    older = determine(record, as_of=date(2024, 3, 1), tables=targeting_tables())
    assert older.criteria.annual_cost_threshold == 5330 and older.findings.annual_cost == 5330
    with pytest.raises(ValueError, match="2 to 3 chronic diseases"):
        decide(record, Plan(min_chronic_diseases=4))
