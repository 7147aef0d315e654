"""What review gives the `mtm` command (entry points, no running stack): `mtm check` and `mtm kb coverage`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
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


def kb(argv: Sequence[str] | None = None) -> int:
    """the knowledge base: `coverage` lists, per most-prescribed drug and label section, what is encoded or not"""
    from mtm.review.knowledge import BUNDLED_DIRECTORY, KB_PATH_SETTING
    from mtm.review.knowledge.coverage import as_json, coverage, render

    parser = argparse.ArgumentParser(prog="mtm kb", description=kb.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("coverage", help="label coverage of the 300 most prescribed drugs; exit 1 on a problem")
    report.add_argument("--kb", help=f"knowledge-base directory (default: {KB_PATH_SETTING} or the bundled one)")
    report.add_argument("--json", action="store_true", help="the whole report as JSON")
    report.add_argument("--detail", action="store_true", help="rules and reasons under each drug")
    report.add_argument("--drug", help="only drugs whose name contains this")
    args = parser.parse_args(argv)
    directory = args.kb or os.environ.get(KB_PATH_SETTING, "").strip() or BUNDLED_DIRECTORY
    result = coverage(directory)
    if args.drug:
        wanted = args.drug.lower()
        result = type(result)(result.version, tuple(d for d in result.drugs if wanted in d.name), result.problems)
    sys.stdout.write((as_json(result) if args.json else render(result, detail=args.detail or bool(args.drug))) + "\n")
    return 1 if result.problems else 0


def kb_main() -> None:
    """Console script `mtm-kb`: the same as `mtm kb`."""
    sys.exit(kb(sys.argv[1:]))
