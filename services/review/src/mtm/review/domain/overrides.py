"""Alert overrides: which alert an override silences, and what counts as a relevant change that lifts it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mtm.contracts.events import Alert, AlertOverride, ReconciledItem

SEVERITY_RANK = {"low": 0, "moderate": 1, "high": 2}


def alert_key(alert: Alert | AlertOverride) -> str:
    """The same alert: the same rule (or kind, for rules without an id) on the same drugs."""
    return f"{alert.rule_id or alert.kind}|{'+'.join(sorted(alert.ingredients))}"


def regimen(alert_ingredients: Iterable[str], items: Sequence[ReconciledItem]) -> tuple[str, ...]:
    """How the alert's drugs are taken: ingredient, daily dose and route of every current item that has them.

    A change in any of them (a new dose, another route, the drug stopped and started again) is a relevant change.
    """
    wanted = set(alert_ingredients)
    found = []
    for item in items:
        if item.status == "stopped" or not wanted.intersection(item.ingredients):
            continue
        doses = ",".join(
            f"{dose.ingredient}:{dose.daily_amount:g}{dose.unit or ''}"
            for dose in sorted(item.ingredient_doses, key=lambda d: d.ingredient)
            if dose.daily_amount is not None
        )
        entry = item.current
        text = entry.text.lower() if entry is not None else ""
        found.append(f"{'+'.join(item.ingredients)} {doses or text} {item.route or ''}".strip())
    return tuple(sorted(found))


@dataclass(frozen=True)
class ActiveOverride:
    override_id: str
    key: str
    severity: str
    regimen: tuple[str, ...]


def suppressing(alert: Alert, items: Sequence[ReconciledItem], overrides: Iterable[ActiveOverride]) -> str | None:
    """The override that silences this alert (same alert, same regimen, no higher severity), if any."""
    key = alert_key(alert)
    now_taken = regimen(alert.ingredients, items)
    for override in overrides:
        if (
            override.key == key
            and override.regimen == now_taken
            and SEVERITY_RANK[alert.severity] <= SEVERITY_RANK[override.severity]
        ):
            return override.override_id
    return None
