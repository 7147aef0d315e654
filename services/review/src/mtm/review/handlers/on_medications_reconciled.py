"""MedicationsReconciled → drug checks → a review task, published as ReviewTaskCreated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import MedicationsReconciled, ReviewTaskCreated
from mtm.platform.consumer import Accepted, BatchConsumer, patient_event_consumer
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
            created = event.caused(
                ReviewTaskCreated,
                source=SOURCE,
                data=task,
                event_id=derived_event_id("review-task-created", task.task_id),
            )
            new_tasks.append(
                (NewTask(task, event.patient_id, event.correlation_id, created.model_dump_json()), created)
            )
        opened = await TaskRepository(conn).add_all([new for new, _ in new_tasks])
        await enqueue(
            conn,
            [
                OutgoingMessage.of_event(created, new.created_event)
                for new, created in new_tasks
                if new.task.task_id in opened
            ],
        )

    return patient_event_consumer(DURABLE, MedicationsReconciled, apply)
