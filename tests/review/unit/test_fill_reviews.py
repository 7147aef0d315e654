"""A pharmacy fill checked against the member's list: which fills open a targeted review, by hand and on the real
knowledge base (warfarin with fluconazole is a high-severity interaction there)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from mtm.contracts import MedicationEntry, ReconciledItem
from mtm.contracts.clinical import PatientDemographics
from mtm.contracts.events import Alert, CareTeam, Reconciliation
from mtm.contracts.program import Dispense
from mtm.review.domain.fills import (
    HIGH_ALERT_TMR_WINDOW,
    SUPPLY_GRACE,
    EarlierFill,
    FillContext,
    decide_fill_review,
    high_alert_task_id,
)
from mtm.review.domain.overrides import ActiveOverride, alert_key, regimen

pytestmark = pytest.mark.unit
PATIENT = "p-fills"
NOW = datetime(2026, 11, 30, 9, tzinfo=UTC)
TODAY = NOW.date()


def warfarin_fluconazole(rec: Reconciliation, severity: str = "high"):
    """The way the DUR engine reports the pair, for lists that take both (stopped items are not taken)."""
    taken = {i for item in rec.items if item.status != "stopped" for i in item.ingredients}
    if {"warfarin", "fluconazole"} <= taken:
        alert = Alert(
            kind="interaction",
            severity=severity,
            tier="interruptive",
            ingredients=("fluconazole", "warfarin"),
            message="Fluconazole raises the INR on warfarin.",
            source="test",
            rule_id="cur.warfarin.fluconazole",
        )
        return [alert], "asap"
    return [], "routine"


def item(name: str, *, status: str = "continued") -> ReconciledItem:
    entry = MedicationEntry(text=f"{name.title()} 5 MG Oral Tablet")
    return ReconciledItem(ingredients=(name,), status=status, home=entry, discharge=entry)


def reconciliation(*items: ReconciledItem) -> Reconciliation:
    return Reconciliation(
        transition_event_id=uuid.uuid4(),
        patient=PatientDemographics(patient_id=PATIENT),
        care_team=CareTeam(primary_care_physician_id="dr-okafor"),
        items=items,
    )


def fill(name: str, on: date = TODAY, days: int = 30) -> Dispense:
    return Dispense(
        dispense_id=f"rx-{uuid.uuid4().hex[:8]}",
        medication=MedicationEntry(text=f"{name.title()} 150 MG Oral Tablet"),
        ingredients=(name,),
        days_supply=days,
        filled_on=on,
    )


def decide(dispense: Dispense, context: FillContext, check=warfarin_fluconazole):
    return decide_fill_review(PATIENT, uuid.uuid4(), NOW, dispense, context, check)


def test_a_fill_that_raises_a_new_high_alert_for_a_member_opens_a_targeted_review() -> None:
    context = FillContext(enrolled=True, reconciliation=reconciliation(item("warfarin"), item("metoprolol")))
    task = decide(fill("fluconazole"), context)
    assert task is not None
    assert (task.reason, task.trigger, task.priority) == ("targeted-medication-review", "high-alert", "asap")
    assert task.due == NOW + HIGH_ALERT_TMR_WINDOW
    assert [a.rule_id for a in task.alerts] == ["cur.warfarin.fluconazole"]
    assert task.care_team.primary_care_physician_id == "dr-okafor"  # recommendations can be referred
    taken = [i.ingredients for i in task.items if i.status != "stopped"]
    assert taken == [("warfarin",), ("metoprolol",), ("fluconazole",)]  # the list the pharmacist reviews


def test_no_review_for_someone_not_in_the_program() -> None:
    context = FillContext(enrolled=False, reconciliation=reconciliation(item("warfarin")))
    assert decide(fill("fluconazole"), context) is None


def test_no_review_when_the_list_already_raised_the_alert_or_the_alert_is_not_high() -> None:
    both = FillContext(enrolled=True, reconciliation=reconciliation(item("warfarin"), item("fluconazole")))
    assert decide(fill("fluconazole"), both) is None  # a refill of a drug already on the list: nothing new

    def moderate(rec):
        return warfarin_fluconazole(rec, "moderate")

    alone = FillContext(enrolled=True, reconciliation=reconciliation(item("warfarin")))
    assert decide(fill("fluconazole"), alone, moderate) is None


def test_a_drug_stopped_at_discharge_and_filled_again_is_new() -> None:
    context = FillContext(
        enrolled=True, reconciliation=reconciliation(item("warfarin"), item("fluconazole", status="stopped"))
    )
    task = decide(fill("fluconazole"), context)
    assert task is not None and [a.rule_id for a in task.alerts] == ["cur.warfarin.fluconazole"]


def test_two_fills_interact_while_the_first_supply_runs_but_not_once_it_lapsed() -> None:
    def earlier(days_ago: int) -> EarlierFill:
        return EarlierFill(uuid.uuid4(), fill("warfarin", TODAY - timedelta(days=days_ago)), NOW)

    running = FillContext(enrolled=True, reconciliation=None, earlier_fills=(earlier(20),))
    task = decide(fill("fluconazole"), running)
    assert task is not None and task.care_team == CareTeam()  # no discharge: nobody on record to refer to
    just_in_grace = FillContext(enrolled=True, reconciliation=None, earlier_fills=(earlier(30 + SUPPLY_GRACE.days),))
    assert decide(fill("fluconazole"), just_in_grace) is not None
    lapsed = FillContext(enrolled=True, reconciliation=None, earlier_fills=(earlier(31 + SUPPLY_GRACE.days),))
    assert decide(fill("fluconazole"), lapsed) is None


def test_one_review_per_finding_whatever_the_fills() -> None:
    context = FillContext(enrolled=True, reconciliation=reconciliation(item("warfarin")))
    first, second = decide(fill("fluconazole"), context), decide(fill("fluconazole"), context)
    assert first is not None and second is not None
    assert first.task_id == second.task_id == high_alert_task_id(PATIENT, first.alerts)
    # Once a fill-triggered review raised it, the finding opens no other review.
    raised = FillContext(
        enrolled=True,
        reconciliation=reconciliation(item("warfarin")),
        raised=frozenset(alert_key(a) for a in first.alerts),
    )
    assert decide(fill("fluconazole"), raised) is None


def test_an_override_of_the_same_alert_on_the_same_regimen_silences_it() -> None:
    rec = reconciliation(item("warfarin"))
    task = decide(fill("fluconazole"), FillContext(enrolled=True, reconciliation=rec))
    assert task is not None
    alert = task.alerts[0]
    taken = [i for i in task.items if i.status != "stopped"]
    override = ActiveOverride("o-1", alert_key(alert), "high", regimen(alert.ingredients, taken))
    assert decide(fill("fluconazole"), FillContext(enrolled=True, reconciliation=rec, overrides=(override,))) is None
    # Another regimen (a different fluconazole product) is a relevant change: the override no longer holds.
    other = ActiveOverride("o-2", alert_key(alert), "high", ("fluconazole 50 mg", "warfarin 1 mg"))
    assert decide(fill("fluconazole"), FillContext(enrolled=True, reconciliation=rec, overrides=(other,))) is not None


def test_the_real_knowledge_base_raises_the_interaction_only_with_the_fill() -> None:
    from mtm.review.drug_checks import build_drug_checker

    check = build_drug_checker()
    context = FillContext(enrolled=True, reconciliation=reconciliation(item("warfarin")))
    task = decide(fill("fluconazole"), context, check)
    assert task is not None
    assert "cur.warfarin.fluconazole" in {a.rule_id for a in task.alerts}
    assert all(a.severity == "high" and "fluconazole" in a.ingredients for a in task.alerts)
    assert decide(fill("metoprolol"), context, check) is None  # nothing high with warfarin
