"""The JSON report `mtm reconcile FILE` prints for one reconciliation."""

from __future__ import annotations

from typing import Any

from mtm.contracts.clinical import MedicationEntry
from mtm.contracts.events import Reconciliation

_ENTRY_FIELDS = ("text", "rxnorm_code", "dose_value", "dose_unit", "frequency", "route", "status")


def reconcile_to_report(rec: Reconciliation) -> dict[str, Any]:
    """Items and discrepancies with both sides trimmed to what a reader compares (nulls dropped)."""
    return {
        "patient": rec.patient.patient_id,
        "items": [
            {
                "ingredients": list(item.ingredients),
                "status": item.status,
                "changes": list(item.changes),
                "documented": item.documented,
                "home": _entry(item.home),
                "discharge": _entry(item.discharge),
            }
            for item in rec.items
        ],
        "discrepancies": [
            {
                "type": discrepancy.type,
                "ingredients": list(discrepancy.ingredients),
                "documented": False,
                "home": _entry(discrepancy.home),
                "discharge": _entry(discrepancy.discharge),
                "message": discrepancy.message,
            }
            for discrepancy in rec.discrepancies
        ],
    }


def _entry(entry: MedicationEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    values = entry.model_dump(mode="json", include=set(_ENTRY_FIELDS))
    return {name: values[name] for name in _ENTRY_FIELDS if values.get(name) is not None}
