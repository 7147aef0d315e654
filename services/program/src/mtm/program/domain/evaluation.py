"""What re-evaluating one member decides: eligibility, enrolment for the year, adherence (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from mtm.contracts.program import (
    AdherenceClass,
    AdherenceMeasurement,
    EligibilityDetermination,
    EvaluationTrigger,
)
from mtm.program.domain.adherence import AdherenceTables, DispensedFill, classes_of, measure
from mtm.program.domain.targeting import Plan, TargetingInput, TargetingTables, determine


@dataclass(frozen=True)
class MemberState:
    """A member as the projection holds them when an evaluation is due."""

    patient_id: str
    targeting: TargetingInput
    fills: Sequence[DispensedFill]
    inputs_seen: int
    inputs_evaluated: int
    last_input: str | None
    evaluated_on: date | None
    enrolled_years: frozenset[int]
    """Program years with an enrolment, whether or not the member later left: nobody is re-enrolled in a year."""
    adherence_year: int | None
    adherence_below: tuple[AdherenceClass, ...]


@dataclass(frozen=True)
class Evaluation:
    determination: EligibilityDetermination
    enrol: bool
    adherence: AdherenceMeasurement | None


def trigger_of(member: MemberState, today: date) -> EvaluationTrigger:
    if member.inputs_seen > member.inputs_evaluated:
        return "fill" if member.last_input == "fill" else "discharge"
    if member.evaluated_on is not None and member.evaluated_on.year != today.year:
        return "program-year"
    return "quarterly"


def evaluate(
    member: MemberState, today: date, *, plan: Plan, tables: TargetingTables, adherence_tables: AdherenceTables
) -> Evaluation:
    determination = determine(
        member.targeting,
        as_of=today,
        tables=tables,
        plan=plan,
        trigger=trigger_of(member, today),
        inputs_considered=member.inputs_seen,
    )
    # Opt-out enrolment: targeted and not enrolled this year yet (one who opted out stays out until next year).
    enrol = determination.eligible and today.year not in member.enrolled_years
    year_fills = [f for f in member.fills if f.filled_on.year == today.year]
    adherence = None
    if any(classes_of(f.ingredients, adherence_tables) for f in year_fills):
        previous = member.adherence_below if member.adherence_year == today.year else ()
        adherence = measure(
            year_fills,
            year=today.year,
            as_of=today,
            tables=adherence_tables,
            diseases=determination.findings.chronic_diseases,
            previous_below=previous,
        )
    return Evaluation(determination=determination, enrol=enrol, adherence=adherence)


def next_quarter(day: date) -> date:
    """The first day of the quarter after `day`: members are re-evaluated at least quarterly."""
    month = (day.month - 1) // 3 * 3 + 4
    return date(day.year + (month > 12), (month - 1) % 12 + 1, 1)
