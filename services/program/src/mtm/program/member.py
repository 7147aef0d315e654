"""A member's FHIR record (mtm.fhir.member) as the pure targeting and adherence inputs."""

from __future__ import annotations

from mtm.fhir.member import MemberRecord
from mtm.program.domain.adherence import DispensedFill
from mtm.program.domain.targeting import (
    ConditionFact,
    CostFact,
    FillFact,
    MedicationFact,
    TargetingInput,
    drug_key,
)


def targeting_input(record: MemberRecord) -> TargetingInput:
    return TargetingInput(
        conditions=[ConditionFact(c.system, c.code, c.clinical_status) for c in record.conditions],
        medications=[MedicationFact(drug_key(m.ingredients, m.name), m.course_days) for m in record.medications],
        fills=[
            FillFact(drug_key(f.ingredients, f.medication.text), f.filled_on, f.days_supply, f.total_cost)
            for f in record.fills
        ],
        claims=[CostFact(c.on, c.amount) for c in record.claims],
        drug_management_program_at_risk=record.drug_management_program_at_risk,
    )


def adherence_fills(record: MemberRecord) -> list[DispensedFill]:
    return [DispensedFill(f.ingredients, f.filled_on, f.days_supply) for f in record.fills]
