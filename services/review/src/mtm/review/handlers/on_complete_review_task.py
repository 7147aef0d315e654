"""CompleteReviewTask: the claiming pharmacist documents recommendations; published as ReviewTaskCompleted."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from mtm.contracts import CommandReply, CompleteReviewTask, ReviewTaskCompleted
from mtm.contracts.events import TaskCompletion
from mtm.contracts.subjects import COMPLETE_REVIEW_TASK
from mtm.platform.outbox import enqueue_events
from mtm.platform.runtime import CommandRoute
from mtm.review.adapters.tasks import TaskRepository
from mtm.review.domain.tasks import decide_completion, derived_event_id

SOURCE = "mtm/review"


async def handle(conn: asyncpg.Connection, command: CompleteReviewTask) -> CommandReply:
    tasks = TaskRepository(conn)
    task = await tasks.lock(command.task_id)
    if task is None:
        return CommandReply(outcome="not_found", message="no such review task", resource_id=str(command.task_id))
    decision = decide_completion(task.state, command.pharmacist_id)
    if decision.outcome != "accepted":
        return CommandReply(
            outcome="conflict", message=decision.message, resource_id=str(command.task_id), status=task.state.status
        )
    now = datetime.now(UTC)
    completion = TaskCompletion(
        task_id=command.task_id,
        pharmacist_id=command.pharmacist_id,
        note=command.note,
        recommendations=command.recommendations,
        care_team=task.task.care_team,
    )
    await tasks.mark_completed(command.task_id, completion, now)
    completed = ReviewTaskCompleted.create(
        source=SOURCE,
        patient_id=task.patient_id,
        data=completion,
        correlation_id=task.correlation_id,
        causation_id=command.command_id,
        event_id=derived_event_id("review-task-completed", command.task_id),
        time=now,
    )
    await enqueue_events(conn, [completed])
    return CommandReply(
        outcome="accepted", message=decision.message, resource_id=str(command.task_id), status="completed"
    )


ROUTE = CommandRoute(subject=COMPLETE_REVIEW_TASK, model=CompleteReviewTask, handle=handle)
