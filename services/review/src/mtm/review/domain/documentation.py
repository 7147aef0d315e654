"""A review's documentation checked against its task: problems tied to real alerts, the member's list filled in."""

from __future__ import annotations

from collections.abc import Sequence

from mtm.contracts.clinical import MedicationEntry
from mtm.contracts.documentation import DrugTherapyProblem, PersonalMedication, ReviewDocumentation
from mtm.contracts.events import Recommendation, ReconciledItem, ReviewTask

ROUTE_WORDS = {"oral": "by mouth", "po": "by mouth", "by mouth": "by mouth", "sublingual": "under the tongue"}
# Plain words for frequencies as written on prescriptions (the member reads the list, not a clinician).
TIMES_A_DAY = {1.0: "once a day", 2.0: "twice a day", 3.0: "3 times a day", 4.0: "4 times a day"}


class DocumentationError(ValueError):
    """The documentation does not fit the task (the message names the field)."""


def checked_documentation(
    documentation: ReviewDocumentation,
    task: ReviewTask,
    recommendations: Sequence[Recommendation],
    current_items: Sequence[ReconciledItem],
) -> ReviewDocumentation:
    """The documentation as recorded: each problem's alert resolved to its rule, an empty list filled from the chart.

    Raises DocumentationError when a problem points at an alert or discrepancy the task does not have, or a
    recommendation at a problem that was not documented.
    """
    problems = tuple(_linked(problem, index, task) for index, problem in enumerate(documentation.problems))
    known = {problem.problem_id for problem in problems}
    for index, rec in enumerate(recommendations):
        if rec.problem_id is not None and rec.problem_id not in known:
            raise DocumentationError(f"recommendations.{index}.problem_id: no documented problem {rec.problem_id}")
    medications = documentation.medications or tuple(personal_medications(current_items))
    return documentation.model_copy(update={"problems": problems, "medications": medications})


def _linked(problem: DrugTherapyProblem, index: int, task: ReviewTask) -> DrugTherapyProblem:
    where = f"documentation.problems.{index}"
    if problem.alert is not None:
        if problem.alert >= len(task.alerts):
            raise DocumentationError(f"{where}.alert: the task has {len(task.alerts)} alert(s)")
        alert = task.alerts[problem.alert]
        return problem.model_copy(
            update={"rule_id": alert.rule_id, "ingredients": problem.ingredients or alert.ingredients}
        )
    if problem.discrepancy is not None:
        if problem.discrepancy >= len(task.discrepancies):
            raise DocumentationError(f"{where}.discrepancy: the task has {len(task.discrepancies)} discrepancy(ies)")
        discrepancy = task.discrepancies[problem.discrepancy]
        return problem.model_copy(update={"ingredients": problem.ingredients or discrepancy.ingredients})
    return problem


def personal_medications(items: Sequence[ReconciledItem]) -> list[PersonalMedication]:
    """The member's current medications as a starting Personal Medication List (the pharmacist adds the why)."""
    found = []
    for item in items:
        entry = item.discharge if item.status != "stopped" else None
        if entry is None:
            continue
        found.append(
            PersonalMedication(
                name=entry.text,
                ingredients=item.ingredients,
                rxnorm_code=entry.rxnorm_code,
                how_i_use_it=directions(entry),
            )
        )
    return found


def directions(entry: MedicationEntry) -> str:
    """`1 tablet by mouth twice a day`, from what the list states; the text as written when it states little."""
    parts = []
    if entry.dose_value is not None:
        parts.append(f"{entry.dose_value:g} {entry.dose_unit or ''}".strip())
    if entry.route:
        parts.append(ROUTE_WORDS.get(entry.route.strip().lower(), entry.route))
    per_day = entry.frequency_per_day
    if per_day is not None and per_day in TIMES_A_DAY:
        parts.append(TIMES_A_DAY[per_day])
    elif entry.frequency:
        parts.append(entry.frequency)
    if entry.as_needed:
        parts.append("when needed")
    return " ".join(parts) or "as directed"
