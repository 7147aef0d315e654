"""MedicationsReconciled → drug checks → a review task, published as ReviewTaskCreated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import MedicationsReconciled, ReviewTaskCreated
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter
from mtm.platform.consumer import Accepted, BatchConsumer, decode_json_model
from mtm.platform.outbox import enqueue_events
from mtm.review.adapters.tasks import NewTask, TaskRepository
from mtm.review.domain.tasks import derived_event_id, open_task
from mtm.review.drug_checks import DrugChecker

SOURCE = "mtm/review"
DURABLE = "review-medications-reconciled"


def consumer(checker: DrugChecker) -> BatchConsumer[MedicationsReconciled]:
    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[MedicationsReconciled]]) -> None:
        now = datetime.now(UTC)
        new_tasks = []
        for item in batch:
            event = item.value
            alerts, priority = checker(event.data)
            new_tasks.append(
                NewTask(open_task(event, alerts, priority, now=now), event.patient_id, event.correlation_id)
            )
        opened = await TaskRepository(conn).add_all(new_tasks)
        created = [
            ReviewTaskCreated.create(
                source=SOURCE,
                patient_id=t.patient_id,
                data=t.task,
                correlation_id=t.correlation_id,
                causation_id=t.task.focus_event_id,
                event_id=derived_event_id("review-task-created", t.task.task_id),
            )
            for t in new_tasks
            if t.task.task_id in opened
        ]
        await enqueue_events(conn, created)

    return BatchConsumer(
        durable=DURABLE,
        stream=PATIENT_EVENTS_STREAM,
        filter_subjects=(event_filter(MedicationsReconciled),),
        partitioned_by=MedicationsReconciled,
        decode=decode_json_model(MedicationsReconciled),
        apply=apply,
    )
