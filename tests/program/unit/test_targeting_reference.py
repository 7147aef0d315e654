"""Targeting's fast paths (remembered codes, one pass over fills, cheapest criterion first) match a plain reading."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtm.program.domain.targeting import (
    ACTIVE_CONDITION,
    LOOKBACK_DAYS,
    MAINTENANCE_MIN_DAYS,
    MIN_PROJECTION_DAYS,
    SYSTEMS,
    ConditionFact,
    CostFact,
    FillFact,
    MedicationFact,
    Plan,
    TargetingInput,
    TargetingTables,
    _normal_code,
    annual_cost,
    determine,
    maintenance_drugs,
    screen,
)
from mtm.program.tables import targeting_tables

pytestmark = pytest.mark.unit
AS_OF = date(2025, 6, 30)
TABLES = targeting_tables()
# Codes of the table, their children, their parents, other diseases' codes, and written forms with and without dots.
CODES = ("E11.9", "E119", "e11.65", "E11", "E1", "I10", "I11.0", "I11.9", "I13.0", "I13.10", "E78.5", "E78.49",
         "N18.6", "N18.5", "Z99.2", "F34.1", "F34.0", "J44.9", "B20", "K21.9", "R51.9", "", " I50.9 ", "73211009",
         "44054006", "1234567")  # fmt: skip
SYSTEM_URLS = (*SYSTEMS, "http://example.org/local", None)
DRUGS = ("metformin", "atorvastatin", "lisinopril", "amoxicillin", "sertraline")
days = st.integers(min_value=-30, max_value=LOOKBACK_DAYS + 40).map(lambda n: AS_OF - timedelta(days=n))
conditions = st.builds(
    ConditionFact,
    st.sampled_from(SYSTEM_URLS),
    st.one_of(st.none(), st.sampled_from(CODES)),
    st.sampled_from((*sorted(ACTIVE_CONDITION), "resolved", "inactive")),
)
fills = st.builds(
    FillFact,
    st.sampled_from(DRUGS),
    days,
    st.sampled_from((5, 10, 14, 28, 30, 90)),
    st.one_of(st.none(), st.floats(min_value=0, max_value=5_000, allow_nan=False)),
)
records = st.builds(
    TargetingInput,
    conditions=st.lists(conditions, max_size=6),
    medications=st.lists(
        st.builds(MedicationFact, st.sampled_from(DRUGS), st.one_of(st.none(), st.integers(1, 120))), max_size=6
    ),
    fills=st.lists(fills, max_size=25),
    claims=st.lists(st.builds(CostFact, days, st.floats(min_value=0, max_value=5_000, allow_nan=False)), max_size=4),
    drug_management_program_at_risk=st.booleans(),
)


def reference_categories(tables: TargetingTables, system: str | None, code: str | None) -> set[str]:
    name = SYSTEMS.get(system or "")
    if name is None or not code:
        return set()
    code = _normal_code(code)
    found = set(tables.exact.get((name, code), ()))
    return found | {category for prefix, category in tables.prefixes.get(name, ()) if code.startswith(prefix)}


def reference_diseases(record: TargetingInput) -> tuple[str, ...]:
    found: set[str] = set()
    for condition in record.conditions:
        if condition.clinical_status in ACTIVE_CONDITION:
            found |= reference_categories(TABLES, condition.system, condition.code)
    return tuple(sorted(found))


def reference_drugs(record: TargetingInput) -> tuple[str, ...]:
    drugs = {m.key for m in record.medications if m.course_days is None or m.course_days >= MAINTENANCE_MIN_DAYS}
    since = AS_OF - timedelta(days=LOOKBACK_DAYS)
    for key in {f.key for f in record.fills}:
        if sum(f.days_supply for f in record.fills if f.key == key and since < f.filled_on <= AS_OF) >= 28:
            drugs.add(key)
    return tuple(sorted(drugs))


def reference_cost(record: TargetingInput, drug_count: int, per_drug: float) -> tuple[float, str]:
    since = AS_OF - timedelta(days=LOOKBACK_DAYS)
    costs = [CostFact(f.filled_on, f.total_cost) for f in record.fills if f.total_cost is not None]
    costs = [c for c in [*costs, *record.claims] if since < c.on <= AS_OF]
    if not costs:
        return round(drug_count * per_drug, 2), "estimate"
    total = sum(c.amount for c in costs)
    span = (AS_OF - min(c.on for c in costs)).days + 1
    if span < LOOKBACK_DAYS:
        total = total * LOOKBACK_DAYS / max(span, MIN_PROJECTION_DAYS)
    return round(total, 2), "claims"


@settings(max_examples=400, deadline=None)
@given(records)
def test_the_fast_paths_find_what_a_plain_reading_finds(record: TargetingInput) -> None:
    result = determine(record, as_of=AS_OF, tables=TABLES)
    drugs = reference_drugs(record)
    per_drug = TABLES.program_year(AS_OF.year).annual_cost_threshold / 8
    assert result.findings.chronic_diseases == reference_diseases(record)
    assert result.findings.maintenance_drugs == drugs == maintenance_drugs(record, AS_OF)
    cost = reference_cost(record, len(drugs), per_drug)
    assert (result.findings.annual_cost, result.findings.cost_basis) == cost
    assert annual_cost(record, AS_OF, len(drugs), per_drug) == cost


@given(st.sampled_from(SYSTEM_URLS), st.sampled_from(CODES))
def test_a_remembered_code_has_the_categories_it_had_the_first_time(system: str | None, code: str) -> None:
    first = TABLES.categories(system, code)
    assert set(first) == reference_categories(TABLES, system, code)
    assert TABLES.categories(system, code) == first


plans = st.builds(Plan, st.integers(2, 3), st.integers(2, 8), st.one_of(st.none(), st.sampled_from((50.0, 400.0))))
maintenance_fills = st.builds(
    FillFact,
    st.sampled_from(DRUGS),
    st.integers(min_value=0, max_value=LOOKBACK_DAYS - 1).map(lambda n: AS_OF - timedelta(days=n)),
    st.sampled_from((28, 30, 90)),
    st.floats(min_value=0, max_value=2_000, allow_nan=False),
)
# Members with several active coded conditions and not at risk: most meet the diseases, so the drugs and the cost
# decide (the records above are mostly short of diseases or at risk).
chronic_records = st.builds(
    TargetingInput,
    conditions=st.lists(
        st.builds(ConditionFact, st.sampled_from(tuple(SYSTEMS)[:2]), st.sampled_from(CODES), st.just("active")),
        min_size=2,
        max_size=8,
    ),
    medications=st.lists(
        st.builds(MedicationFact, st.sampled_from(DRUGS), st.one_of(st.none(), st.integers(1, 120))), max_size=6
    ),
    fills=st.lists(st.one_of(fills, maintenance_fills), max_size=25),
    claims=st.lists(st.builds(CostFact, days, st.floats(min_value=0, max_value=5_000, allow_nan=False)), max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(records, chronic_records), plans)
def test_a_screening_targets_whom_a_plain_reading_of_the_criteria_targets(record: TargetingInput, plan: Plan) -> None:
    screening = screen(record, as_of=AS_OF, tables=TABLES, plan=plan)
    year = TABLES.program_year(AS_OF.year)
    drugs = reference_drugs(record)
    cost, _ = reference_cost(record, len(drugs), plan.cost_per_maintenance_drug or year.annual_cost_threshold / 8)
    by_criteria = (
        len(reference_diseases(record)) >= plan.min_chronic_diseases
        and len(drugs) >= plan.min_maintenance_drugs
        and cost >= year.annual_cost_threshold
    )
    at_risk = "drug-management-program" if record.drug_management_program_at_risk else None
    expected = "chronic-diseases-drugs-cost" if by_criteria else at_risk
    assert (screening.basis, screening.eligible) == (expected, expected is not None)
    determination = screening.determination()
    assert (determination.basis, determination.eligible) == (expected, expected is not None)
    assert determination == determine(record, as_of=AS_OF, tables=TABLES, plan=plan)
