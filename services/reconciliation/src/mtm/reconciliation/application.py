"""Reconciliation's use cases: take in a discharge and reconcile its medication lists, take in pharmacy fills."""

from __future__ import annotations

import uuid
from typing import Protocol

from mtm.contracts import MedicationDispensed, MedicationsReconciled, TransitionOfCareRecorded
from mtm.reconciliation.domain import reconcile
from mtm.reconciliation.domain.identity import Recorded, discharge_digest, id_reused_for_another_discharge

SOURCE = "mtm/reconciliation"
_NAMESPACE = uuid.UUID("a1f0d7a2-2c4b-4e55-8b1e-6c0f3e9d2b77")


def reconciled_event_id(transition_event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"medications-reconciled:{transition_event_id}")


class Ledger(Protocol):
    """Discharges already recorded, as the projection knows them."""

    async def recorded(self, event_id: uuid.UUID) -> Recorded | None: ...

    async def said_before(self, event: TransitionOfCareRecorded) -> bool: ...


async def record_discharge(
    transition: TransitionOfCareRecorded, *, ledger: Ledger
) -> list[TransitionOfCareRecorded | MedicationsReconciled]:
    """A validated discharge goes on the patient log as it is, reconciled in the same step.

    Its id was fixed by the hospital or its content. An id already used for another patient's or another
    discharge is refused (parked with the reason): taken for a resend, the second discharge would be lost without
    a trace. The same id with the same content is a resend and records nothing. Recording and reconciling at once
    keeps the discharge from making a round trip through the log and back into this service before its review
    can start; the intake is one ordered consumer, so a patient's discharges are still reconciled in order.
    """
    recorded = await ledger.recorded(transition.id)
    if recorded is not None:
        # Only an id seen before needs the digest (a serialization of the whole discharge): most are new.
        refused = id_reused_for_another_discharge(recorded, transition.patient_id, discharge_digest(transition.data))
        if refused is not None:
            raise ValueError(refused)
        return []
    return [transition, *await reconcile_discharge(transition, ledger=ledger)]


async def reconcile_discharge(
    event: TransitionOfCareRecorded, *, ledger: Ledger | None = None
) -> list[MedicationsReconciled]:
    """Home and discharge lists matched; the medication list follows from the event this returns.

    The same encounter sent again under a new id with the same content is recognised and reconciled once; sent
    with different content it is a correction, reconciled (and reviewed) again.
    """
    if ledger is not None and await ledger.said_before(event):
        return []
    return reconcile_now(event)


def reconcile_now(event: TransitionOfCareRecorded) -> list[MedicationsReconciled]:
    """The reconciliation of one discharge, as the event that records it."""
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
