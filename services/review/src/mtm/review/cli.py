"""What review gives the `mtm` command (an entry point, no running stack): `mtm check`, the drug checks offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtm.contracts.events import Reconciliation


def check() -> Callable[[Reconciliation], dict[str, Any]]:
    """drug-utilization review of FHIR R4 bundles, one JSON line per file"""
    from mtm.review.domain.dur import check as run_checks
    from mtm.review.domain.dur import context_from_reconciliation
    from mtm.review.knowledge import load_configured

    # Loaded once for every file: the site's knowledge base (MTM_REVIEW_KB_PATH) or the bundled one.
    kb = load_configured()

    def alerts(reconciliation: Reconciliation) -> dict[str, Any]:
        context, medications = context_from_reconciliation(reconciliation)
        return {
            "patient": reconciliation.patient.patient_id,
            "alerts": [
                {
                    "kind": alert.kind,
                    "severity": alert.severity,
                    "tier": alert.tier,
                    "ingredients": list(alert.ingredients),
                    "message": alert.message,
                    "source": alert.source,
                }
                for alert in run_checks(context, medications, kb)
            ],
        }

    return alerts
