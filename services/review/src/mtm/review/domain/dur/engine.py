"""Drug-utilization review: run every check over the current medication list and rank the alerts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from mtm.contracts import Alert
from mtm.review.domain.dur import checks
from mtm.review.domain.dur.checks import Medication, Review
from mtm.review.domain.dur.knowledge_base import KnowledgeBase
from mtm.review.domain.dur.model import CheckedMedication, PatientContext
from mtm.review.domain.dur.rules import SEVERITY_RANK

ALL_CHECKS = "interaction, duplication, dose, renal, condition, omission, allergy, geriatric and pharmacogenomic checks"


def check(context: PatientContext, medications: Sequence[CheckedMedication], kb: KnowledgeBase) -> list[Alert]:
    """Every alert for this patient and list, one per finding, highest severity first.

    Order: severity, kind, ingredients, rule id, message. A medication that is not resolved to ingredients,
    and any check that lacked the data it needs, gives an `unresolved` low passive alert naming the checks
    that did not run.
    """
    review = Review()
    resolved: list[Medication] = []
    for index, medication in enumerate(medications):
        ingredients = tuple(dict.fromkeys(kb.canonical(name) for name in medication.ingredients if name.strip()))
        if not medication.resolved or not ingredients:
            review.alerts.append(
                Alert(
                    kind="unresolved",
                    severity="low",
                    tier="passive",
                    ingredients=ingredients,
                    message=(
                        f"'{medication.text}' could not be matched to ingredients: the {ALL_CHECKS} did not run "
                        "for it. Review it by hand."
                    ),
                    source="mtm drug-utilization review (ingredient resolution)",
                    rule_id="unresolved.medication",
                )
            )
            continue
        resolved.append(Medication(index, medication, ingredients, kb.acting(ingredients, medication.route)))

    decided = checks.renal_interactions(context, resolved, kb, review)
    checks.interactions(resolved, kb, review, decided)
    checks.duplications(resolved, kb, review)
    checks.combinations(context, resolved, kb, review)
    checks.doses(resolved, kb, review)
    checks.pair_doses(resolved, kb, review)
    checks.dose_criteria(context, resolved, kb, review)
    checks.renal(context, resolved, kb, review)
    checks.conditions(context, resolved, kb, review)
    checks.omissions(context, resolved, kb, review, unresolved=len(medications) - len(resolved))
    checks.drug_omissions(context, resolved, kb, review, unresolved=len(medications) - len(resolved))
    checks.allergies(context, resolved, kb, review)
    checks.geriatric(context, resolved, kb, review)
    checks.pharmacogenomics(context, resolved, kb, review)
    review.alerts.extend(_not_run_alerts(resolved, review))
    return sorted(review.alerts, key=_order)


def _not_run_alerts(medications: Iterable[Medication], review: Review) -> Iterable[Alert]:
    """One notice per patient for every check that lacked data, grouped by check and reason.

    A list without doses would otherwise give one notice per drug and bury the findings; one notice still
    names every medication whose check did not run, so nothing is silently skipped.
    """
    grouped: dict[tuple[str, str], list[str]] = {}
    ingredients: set[str] = set()
    for medication in medications:
        for name, reason in review.not_run.get(medication.index, {}).items():
            grouped.setdefault((name, reason), []).append(f"'{medication.source.text}'")
            ingredients.update(medication.ingredients)
    if not grouped:
        return
    parts = [f"{name} check could not run ({why}) for {', '.join(texts)}" for (name, why), texts in grouped.items()]
    yield Alert(
        kind="unresolved",
        severity="low",
        tier="passive",
        ingredients=tuple(sorted(ingredients)),
        message="; ".join(parts) + ".",
        source="mtm drug-utilization review (missing dose, frequency, age or kidney-function data)",
        rule_id="unresolved.data",
    )


def _order(alert: Alert) -> tuple[int, str, tuple[str, ...], str, str]:
    return (SEVERITY_RANK[alert.severity], alert.kind, alert.ingredients, alert.rule_id or "", alert.message)


def priority_from(alerts: Iterable[Alert], discrepancy_count: int) -> Literal["routine", "urgent", "asap", "stat"]:
    """Priority of the pharmacist review task opened for these alerts and reconciliation discrepancies.

    * `asap`: at least one high-severity interruptive alert (a contraindicated or dangerous finding).
    * `urgent`: any other high or moderate alert, or at least one undocumented discrepancy.
    * `routine`: only low alerts (or none) and no discrepancy.

    `stat` is never derived from DUR alone: it is reserved for a clinician escalating a task by hand.
    """
    alerts = list(alerts)
    if any(alert.severity == "high" and alert.tier == "interruptive" for alert in alerts):
        return "asap"
    if discrepancy_count > 0 or any(alert.severity in ("high", "moderate") for alert in alerts):
        return "urgent"
    return "routine"
