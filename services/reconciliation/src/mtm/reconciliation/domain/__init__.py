"""Pure reconciliation domain: frozen values and decisions, no I/O."""

from mtm.reconciliation.domain.medication_list import (
    FILL_HISTORY,
    Fill,
    MedicationList,
    MedicationListEntry,
    Provenance,
    apply_fill,
    apply_to_medication_list,
    as_fill,
    fill_key,
    list_order,
    pharmacy_entry,
    to_fhir_list,
    with_fill,
)
from mtm.reconciliation.domain.reconcile import reconcile
from mtm.reconciliation.domain.report import reconcile_to_report

__all__ = [
    "FILL_HISTORY",
    "Fill",
    "MedicationList",
    "MedicationListEntry",
    "Provenance",
    "apply_fill",
    "apply_to_medication_list",
    "as_fill",
    "fill_key",
    "list_order",
    "pharmacy_entry",
    "reconcile",
    "reconcile_to_report",
    "to_fhir_list",
    "with_fill",
]
