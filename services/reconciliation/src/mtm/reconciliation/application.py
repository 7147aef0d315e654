"""Reconciliation's use cases: take in a discharge, reconcile its medication lists, take in pharmacy fills."""

from __future__ import annotations

import uuid

from mtm.contracts import MedicationDispensed, MedicationsReconciled, TransitionOfCareRecorded
from mtm.reconciliation.domain import reconcile

SOURCE = "mtm/reconciliation"
_NAMESPACE = uuid.UUID("a1f0d7a2-2c4b-4e55-8b1e-6c0f3e9d2b77")


def reconciled_event_id(transition_event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"medications-reconciled:{transition_event_id}")


def record_discharge(transition: TransitionOfCareRecorded) -> list[TransitionOfCareRecorded]:
    """A validated discharge goes on the patient log as it is; its id was fixed by the hospital or its content."""
    return [transition]


def reconcile_discharge(event: TransitionOfCareRecorded) -> list[MedicationsReconciled]:
    """Home and discharge lists matched; the medication list follows from the event this returns."""
    return [
        event.caused(
            MedicationsReconciled,
            source=SOURCE,
            data=reconcile(event.data, event.id),
            event_id=reconciled_event_id(event.id),
        )
    ]


def record_fills(fills: tuple[MedicationDispensed, ...]) -> list[MedicationDispensed]:
    """Validated fills go on their patients' logs; the medication lists follow from them."""
    return list(fills)
