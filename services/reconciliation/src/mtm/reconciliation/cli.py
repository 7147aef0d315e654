"""What reconciliation gives the `mtm` command (entry points, no stack needed): `mtm reconcile`, the bundle reader."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtm.contracts.events import Reconciliation

_NAMESPACE = uuid.UUID("5d0b7f36-9a54-4c1e-8f0e-8c2f6b7a1e90")


def read_discharge_bundle(path: Path) -> Reconciliation:
    """The file's reconciliation; ValueError says what is wrong and where (unreadable, not JSON, not a bundle).

    `mtm` hands it to every file command, review's `mtm check` too, as NATS carries `MedicationsReconciled` live.
    """
    from mtm.fhir import parse_bundle
    from mtm.fhir.validation import read_json_file
    from mtm.reconciliation.domain import reconcile

    body = read_json_file(path)
    # The id is derived from the file, so reconciling the same file twice gives the same result.
    return reconcile(parse_bundle(body), uuid.uuid5(_NAMESPACE, str(path.resolve())))


def reconcile() -> Callable[[Reconciliation], dict[str, Any]]:
    """reconcile FHIR R4 discharge bundles, one JSON line per file"""
    from mtm.reconciliation.domain import reconcile_to_report

    return reconcile_to_report
