"""The review service's use of the DUR engine: one knowledge base loaded at start, one call per reconciliation."""

from __future__ import annotations

from collections.abc import Callable

from mtm.contracts import Alert
from mtm.contracts.events import Reconciliation, TaskPriority

DrugChecker = Callable[[Reconciliation], tuple[list[Alert], TaskPriority]]


def build_drug_checker(kb_path: str | None = None) -> DrugChecker:
    from mtm.review.domain.dur import check, context_from_reconciliation, priority_from
    from mtm.review.knowledge import load_bundled, load_from_directory

    kb = load_from_directory(kb_path) if kb_path else load_bundled()

    def run(rec: Reconciliation) -> tuple[list[Alert], TaskPriority]:
        context, medications = context_from_reconciliation(rec)
        alerts = check(context, medications, kb)
        return alerts, priority_from(alerts, len(rec.discrepancies))

    return run
