"""MedicationsReconciled → drug checks → a review task, published as ReviewTaskCreated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import MedicationsReconciled, ReviewTaskCreated
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter, event_subject
from mtm.platform.consumer import Accepted, BatchConsumer, decode_json_model
from mtm.platform.outbox import OutgoingMessage, enqueue
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
            task = open_task(event, alerts, priority, now=now)
            created = ReviewTaskCreated.create(
                source=SOURCE,
                patient_id=event.patient_id,
                data=task,
                correlation_id=event.correlation_id,
                causation_id=event.id,
                event_id=derived_event_id("review-task-created", task.task_id),
            )
            new_tasks.append(
                (NewTask(task, event.patient_id, event.correlation_id, created.model_dump_json()), created)
            )
        opened = await TaskRepository(conn).add_all([new for new, _ in new_tasks])
        await enqueue(
            conn,
            [
                OutgoingMessage(
                    subject=event_subject(created), msg_id=str(created.id), payload=new.created_event.encode()
                )
                for new, created in new_tasks
                if new.task.task_id in opened
            ],
        )

    return BatchConsumer(
        durable=DURABLE,
        stream=PATIENT_EVENTS_STREAM,
        filter_subjects=(event_filter(MedicationsReconciled),),
        partitioned_by=MedicationsReconciled,
        decode=decode_json_model(MedicationsReconciled),
        apply=apply,
    )
