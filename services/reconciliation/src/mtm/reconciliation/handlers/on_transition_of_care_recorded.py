"""TransitionOfCareRecorded → reconciliation → MedicationsReconciled (the medication list follows from that event)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import MedicationsReconciled, TransitionOfCareRecorded
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter, event_subject
from mtm.platform.consumer import Accepted, BatchConsumer, decode_json_model
from mtm.platform.outbox import OutgoingMessage, enqueue
from mtm.reconciliation.adapters.reconciliations import NewReconciliation, ReconciliationRepository
from mtm.reconciliation.domain import reconcile

SOURCE = "mtm/reconciliation"
DURABLE = "reconciliation-transition-of-care"
_NAMESPACE = uuid.UUID("a1f0d7a2-2c4b-4e55-8b1e-6c0f3e9d2b77")


def reconciled_event_id(transition_event_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"medications-reconciled:{transition_event_id}")


async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[TransitionOfCareRecorded]]) -> None:
    repo = ReconciliationRepository(conn)
    now = datetime.now(UTC)
    reconciled = []
    new = []
    for item in batch:
        event = item.value
        rec = reconcile(event.data, event.id)
        out = MedicationsReconciled.create(
            source=SOURCE,
            patient_id=event.patient_id,
            data=rec,
            correlation_id=event.correlation_id,
            causation_id=event.id,
            event_id=reconciled_event_id(event.id),
            time=now,
        )
        body = out.model_dump_json()
        reconciled.append(OutgoingMessage(subject=event_subject(out), msg_id=str(out.id), payload=body.encode()))
        new.append(NewReconciliation(out.id, event.id, event.patient_id, item.delivery.stream_seq, rec, body))
    await repo.add_all(new)
    await enqueue(conn, reconciled)


def consumer() -> BatchConsumer[TransitionOfCareRecorded]:
    return BatchConsumer(
        durable=DURABLE,
        stream=PATIENT_EVENTS_STREAM,
        filter_subjects=(event_filter(TransitionOfCareRecorded),),
        partitioned_by=TransitionOfCareRecorded,
        decode=decode_json_model(TransitionOfCareRecorded),
        apply=apply,
    )
