"""A pharmacy fill against the member's medication list: the new high-severity alerts that open a targeted review."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from mtm.contracts.clinical import PatientDemographics
from mtm.contracts.events import Alert, CareTeam, ReconciledItem, Reconciliation, ReviewTask, TaskPriority
from mtm.contracts.program import Dispense
from mtm.review.domain.dur.engine import priority_from
from mtm.review.domain.overrides import ActiveOverride, alert_key, suppressing

_NAMESPACE = uuid.UUID("0c6f3d52-5f0e-4d6b-9a43-2f8b7e1d4c90")
HIGH_ALERT_TMR_WINDOW = timedelta(days=3)
"""A TMR opened by a new high-severity alert is worked within 3 days: mtm's service level (CMS sets none), shorter
than the 7 days of a post-discharge review because nobody has looked at this combination yet."""
SUPPLY_GRACE = timedelta(days=30)
"""A fill counts as still taken this long after its supply ran out: the PQA measures' gap allowance, so a late
refill is not mistaken for a new drug."""

Check = Callable[[Reconciliation], tuple[list[Alert], TaskPriority]]


@dataclass(frozen=True)
class EarlierFill:
    """A fill already on the member's record, as review's projection keeps it."""

    event_id: uuid.UUID
    dispense: Dispense
    recorded_at: datetime


@dataclass(frozen=True)
class FillContext:
    """What review knows of the member when a fill arrives (from its projection of the log)."""

    enrolled: bool
    reconciliation: Reconciliation | None
    """The latest reconciliation: the list the member went home with, and their allergies, conditions, labs."""
    earlier_fills: tuple[EarlierFill, ...] = ()
    overrides: tuple[ActiveOverride, ...] = ()
    raised: frozenset[str] = frozenset()
    """Keys of the alerts earlier fill-triggered reviews of this member already raised."""


def _same_drug(item: ReconciledItem, ingredients: frozenset[str]) -> bool:
    return item.status != "stopped" and frozenset(i.lower() for i in item.ingredients) == ingredients


def fill_item(dispense: Dispense, *, as_discharge: bool) -> ReconciledItem:
    """The fill as a list entry, on the side of the list the drug checks read (the discharge list when there is one)."""
    entry = dispense.medication
    return ReconciledItem(
        ingredients=dispense.ingredients,
        status="new",
        home=None if as_discharge else entry,
        discharge=entry if as_discharge else None,
        resolved=bool(dispense.ingredients),
        route=entry.route,
    )


def _with(base: Reconciliation, dispense: Dispense) -> Reconciliation:
    """The list with the fill on it: replacing the entry for the same drug (a refill says how it is taken now)."""
    wanted = frozenset(i.lower() for i in dispense.ingredients)
    as_discharge = any(item.discharge is not None for item in base.items)
    kept = tuple(item for item in base.items if not _same_drug(item, wanted))
    return base.model_copy(update={"items": (*kept, fill_item(dispense, as_discharge=as_discharge))})


def is_running(fill: Dispense, on: date) -> bool:
    """Whether a fill's supply (with the grace period) still covers `on`."""
    return fill.filled_on <= on <= fill.filled_on + timedelta(days=fill.days_supply) + SUPPLY_GRACE


def list_before(context: FillContext, patient_id: str, fill_event_id: uuid.UUID, fill: Dispense) -> Reconciliation:
    """The member's list as review knows it when the fill arrives: the latest reconciliation, then every earlier
    fill whose supply still runs, in the order they were recorded (the fill itself left out, should it be
    recorded already: a redelivery)."""
    base = context.reconciliation or Reconciliation(
        transition_event_id=uuid.UUID(int=0), patient=PatientDemographics(patient_id=patient_id)
    )
    for earlier in sorted(context.earlier_fills, key=lambda f: (f.dispense.filled_on, f.recorded_at)):
        itself = earlier.event_id == fill_event_id or earlier.dispense.dispense_id == fill.dispense_id
        if not itself and is_running(earlier.dispense, fill.filled_on):
            base = _with(base, earlier.dispense)
    return base


def new_high_alerts(
    before: Sequence[Alert],
    after: Sequence[Alert],
    fill: Dispense,
    items: Sequence[ReconciledItem],
    context: FillContext,
) -> list[Alert]:
    """High-severity alerts on the filled drug that the list without it did not raise, that no override silences
    and that no earlier fill-triggered review raised already."""
    known = {alert_key(alert) for alert in before} | context.raised
    filled = {i.lower() for i in fill.ingredients}
    found: dict[str, Alert] = {}
    for alert in after:
        key = alert_key(alert)
        if alert.severity != "high" or key in known or key in found:
            continue
        if not filled.intersection(i.lower() for i in alert.ingredients):
            continue
        if suppressing(alert, items, context.overrides) is not None:
            continue
        found[key] = alert
    return list(found.values())


def high_alert_task_id(patient_id: str, alerts: Iterable[Alert]) -> uuid.UUID:
    """One review per member and finding, whatever the number of fills or deliveries that raise it."""
    keys = "|".join(sorted(alert_key(alert) for alert in alerts))
    return uuid.uuid5(_NAMESPACE, f"high-alert-tmr:{patient_id}:{keys}")


def decide_fill_review(
    patient_id: str, fill_event_id: uuid.UUID, recorded_at: datetime, fill: Dispense, context: FillContext, check: Check
) -> ReviewTask | None:
    """The targeted review a fill calls for: only for a member of the MTM program (TMRs are a program service,
    as for adherence), only when the fill raises a high-severity alert that is new for this member."""
    if not context.enrolled or not fill.ingredients:
        return None
    before = list_before(context, patient_id, fill_event_id, fill)
    after = _with(before, fill)
    before_alerts, _ = check(before)
    after_alerts, _ = check(after)
    items = tuple(item for item in after.items if item.status != "stopped")
    alerts = new_high_alerts(before_alerts, after_alerts, fill, items, context)
    if not alerts:
        return None
    care_team = context.reconciliation.care_team if context.reconciliation else CareTeam()
    return ReviewTask(
        task_id=high_alert_task_id(patient_id, alerts),
        reason="targeted-medication-review",
        priority=priority_from(alerts, 0),
        focus_event_id=fill_event_id,
        care_team=care_team,
        items=after.items,
        alerts=tuple(alerts),
        due=recorded_at + HIGH_ALERT_TMR_WINDOW,
        trigger="high-alert",
    )
