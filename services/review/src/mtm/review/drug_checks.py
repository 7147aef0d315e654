"""The review service's use of the DUR engine: one knowledge base loaded at start, one call per reconciliation."""

from __future__ import annotations

import time
from collections.abc import Callable

from mtm.contracts import Alert
from mtm.contracts.events import Reconciliation, TaskPriority
from mtm.contracts.limits import MAX_ALERTS
from mtm.platform import metrics, tracing

DrugChecker = Callable[[Reconciliation], tuple[list[Alert], TaskPriority]]


def build_drug_checker(kb_path: str | None = None) -> DrugChecker:
    return build_drug_checkers(kb_path)[0]


def build_drug_checkers(kb_path: str | None = None) -> tuple[DrugChecker, DrugChecker]:
    """The checks of a reconciliation, timed and counted, and the same checks on the same knowledge base unobserved:
    a fill is checked twice (the list with and without it), which would count the list's alerts again each time."""
    from mtm.review.domain.dur import check, context_from_reconciliation, priority_from
    from mtm.review.knowledge import load_bundled, load_from_directory

    kb = load_from_directory(kb_path) if kb_path else load_bundled()

    def checker(observed: bool) -> DrugChecker:
        def run(rec: Reconciliation) -> tuple[list[Alert], TaskPriority]:
            started = time.perf_counter()
            with tracing.child("drug check") as span:
                context, medications = context_from_reconciliation(rec)
                alerts = check(context, medications, kb)
                if span is not None:
                    span.set_attribute("mtm.medications", len(medications))
                    span.set_attribute("mtm.alerts", len(alerts))
            if observed:
                observe(time.perf_counter() - started, alerts)
            return within_limit(alerts), priority_from(alerts, len(rec.discrepancies))

        return run

    return checker(True), checker(False)


def observe(took_s: float, alerts: list[Alert]) -> None:
    """How long the checks took and what they found (a redelivered reconciliation is checked, and counted, again)."""
    found = metrics.current()
    found.histogram("mtm_drug_check_duration_seconds", "Time to run the drug checks on one reconciliation.").observe(
        took_s
    )
    raised = found.counter("mtm_alerts", "Alerts the drug checks raised, by kind and severity.", ("kind", "severity"))
    for alert in alerts:
        raised.labels(alert.kind, alert.severity).inc()


_RANK = {"high": 0, "moderate": 1, "low": 2}


def within_limit(alerts: list[Alert], limit: int = MAX_ALERTS) -> list[Alert]:
    """At most `limit` alerts on one task: the most severe kept, and a notice that says how many were left out.

    A list that long needs a full review whatever the rest say; the notice makes that visible, so nothing is
    dropped silently, and the task still fits in one message.
    """
    if len(alerts) <= limit:
        return alerts
    kept = sorted(alerts, key=lambda a: (_RANK[a.severity], a.tier != "interruptive"))[: limit - 1]
    left_out = len(alerts) - len(kept)
    notice = Alert(
        kind="unresolved",
        severity="moderate",
        tier="passive",
        ingredients=(),
        message=f"{left_out} further lower-severity alerts are not listed: review the whole medication list.",
        source="mtm limit on alerts per task (mtm.contracts.limits.MAX_ALERTS)",
        rule_id="mtm.alerts-left-out",
    )
    return [*kept, notice]
