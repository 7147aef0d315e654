"""`mtm check` and `mtm reconcile` on FHIR R4 bundle files: one JSON line per file, errors on their own line."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from mtm.contracts.events import Reconciliation
from mtm.fhir import parse_bundle
from mtm.reconciliation.domain import reconcile, reconcile_to_report

_NAMESPACE = uuid.UUID("5d0b7f36-9a54-4c1e-8f0e-8c2f6b7a1e90")


def reconcile_file(path: Path) -> Reconciliation:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror or exc}") from exc
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    transition = parse_bundle(body)
    return reconcile(transition, uuid.uuid5(_NAMESPACE, str(path.resolve())))


def _each(paths: Iterable[str], render: Callable[[Reconciliation], dict[str, Any]], out: TextIO) -> int:
    status = 0
    for name in paths:
        try:
            line = {"source": name, **render(reconcile_file(Path(name)))}
        except ValueError as exc:
            line = {"source": name, "error": str(exc)}
            status = 1
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
    return status


def reconcile_files(paths: Iterable[str], out: TextIO = sys.stdout) -> int:
    return _each(paths, reconcile_to_report, out)


def check_files(paths: Iterable[str], out: TextIO = sys.stdout) -> int:
    from mtm.review.domain.dur import check, context_from_reconciliation
    from mtm.review.knowledge import load_configured

    kb = load_configured()

    def alerts(rec: Reconciliation) -> dict[str, Any]:
        context, medications = context_from_reconciliation(rec)
        return {
            "patient": rec.patient.patient_id,
            "alerts": [
                {
                    "kind": a.kind,
                    "severity": a.severity,
                    "tier": a.tier,
                    "ingredients": list(a.ingredients),
                    "message": a.message,
                    "source": a.source,
                }
                for a in check(context, medications, kb)
            ],
        }

    return _each(paths, alerts, out)
