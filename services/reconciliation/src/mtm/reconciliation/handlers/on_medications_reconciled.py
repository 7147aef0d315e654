"""MedicationsReconciled → the patient's personal medication list, a projection that can be rebuilt from the log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import MedicationsReconciled
from mtm.platform.consumer import Accepted, BatchConsumer, patient_event_consumer
from mtm.reconciliation.adapters.reconciliations import ReconciliationRepository
from mtm.reconciliation.domain import MedicationList, apply_to_medication_list

DURABLE = "reconciliation-medication-list"


async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[MedicationsReconciled]]) -> None:
    repo = ReconciliationRepository(conn)
    stored = await repo.lock_lists([item.value.patient_id for item in batch])
    lists: dict[str, tuple[int, MedicationList | None]] = {
        p: (s.last_seq, s.medication_list) for p, s in stored.items()
    }
    changed: dict[str, tuple[int, uuid.UUID, MedicationList]] = {}
    now = datetime.now(UTC)
    for item in batch:
        event, seq = item.value, item.delivery.stream_seq
        last_seq, current = lists.get(event.patient_id, (0, None))
        if seq <= last_seq:
            continue  # an older reconciliation arriving late must not overwrite a newer list
        updated = apply_to_medication_list(current, event.data, event_id=event.id, recorded_at=now)
        lists[event.patient_id] = (seq, updated)
        changed[event.patient_id] = (seq, event.id, updated)
    if changed:
        await repo.save_lists(changed)


def consumer() -> BatchConsumer[MedicationsReconciled]:
    return patient_event_consumer(DURABLE, MedicationsReconciled, apply)
