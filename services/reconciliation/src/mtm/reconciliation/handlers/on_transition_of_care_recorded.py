"""TransitionOfCareRecorded → reconciliation → MedicationsReconciled (the medication list follows from that event)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import MedicationsReconciled, TransitionOfCareRecorded
from mtm.platform.consumer import Accepted, BatchConsumer, patient_event_consumer
from mtm.platform.outbox import OutgoingMessage, enqueue
from mtm.reconciliation.adapters.reconciliations import NewReconciliation, ReconciliationRepository
from mtm.reconciliation.domain import reconcile

SOURCE = "mtm/reconciliation"
DURABLE = "reconciliation-transition-of-care"
_NAMESPACE = uuid.UUID("a1f0d7a2-2c4b-4e55-8b1e-6c0f3e9d2b77")


def reconciled_event_id(transition_event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"medications-reconciled:{transition_event_id}")


def medications_reconciled(event: TransitionOfCareRecorded, now: datetime) -> MedicationsReconciled:
    """The reconciliation of one discharge, as the event this service publishes."""
    return event.caused(
        MedicationsReconciled,
        source=SOURCE,
        data=reconcile(event.data, event.id),
        event_id=reconciled_event_id(event.id),
        time=now,
    )


async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[TransitionOfCareRecorded]]) -> None:
    repo = ReconciliationRepository(conn)
    now = datetime.now(UTC)
    reconciled = []
    new = []
    for item in batch:
        event = item.value
        out = medications_reconciled(event, now)
        body = out.model_dump_json()
        reconciled.append(OutgoingMessage.of_event(out, body))
        new.append(NewReconciliation(out.id, event.id, event.patient_id, item.delivery.stream_seq, out.data, body))
    await repo.add_all(new)
    await enqueue(conn, reconciled)


def consumer() -> BatchConsumer[TransitionOfCareRecorded]:
    return patient_event_consumer(DURABLE, TransitionOfCareRecorded, apply)
