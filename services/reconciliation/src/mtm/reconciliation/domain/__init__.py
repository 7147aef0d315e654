"""Pure reconciliation domain: frozen values and decisions, no I/O."""

from mtm.reconciliation.domain.medication_list import (
    MedicationList,
    MedicationListEntry,
    Provenance,
    apply_fill,
    apply_to_medication_list,
    to_fhir_list,
)
from mtm.reconciliation.domain.reconcile import reconcile
from mtm.reconciliation.domain.report import reconcile_to_report

__all__ = [
    "MedicationList",
    "MedicationListEntry",
    "Provenance",
    "apply_fill",
    "apply_to_medication_list",
    "reconcile",
    "reconcile_to_report",
    "to_fhir_list",
]
