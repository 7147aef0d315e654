"""ClaimReviewTask: exactly one pharmacist wins a task; the row lock decides races."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from mtm.contracts import ClaimReviewTask, CommandReply, ReviewTaskClaimed
from mtm.contracts.events import TaskClaim
from mtm.contracts.subjects import CLAIM_REVIEW_TASK
from mtm.platform.outbox import enqueue_events
from mtm.platform.runtime import CommandRoute
from mtm.review.adapters.tasks import TaskRepository
from mtm.review.domain.tasks import decide_claim, derived_event_id

SOURCE = "mtm/review"


async def handle(conn: asyncpg.Connection, command: ClaimReviewTask) -> CommandReply:
    tasks = TaskRepository(conn)
    task = await tasks.lock(command.task_id)
    if task is None:
        return CommandReply(outcome="not_found", message="no such review task", resource_id=str(command.task_id))
    decision = decide_claim(task.state, command.pharmacist_id)
    if decision.outcome == "conflict":
        return CommandReply(
            outcome="conflict", message=decision.message, resource_id=str(command.task_id), status=task.state.status
        )
    if decision.outcome == "accepted":
        now = datetime.now(UTC)
        await tasks.mark_claimed(command.task_id, command.pharmacist_id, now)
        claimed = ReviewTaskClaimed.create(
            source=SOURCE,
            patient_id=task.patient_id,
            data=TaskClaim(task_id=command.task_id, pharmacist_id=command.pharmacist_id),
            correlation_id=task.correlation_id,
            causation_id=command.command_id,
            event_id=derived_event_id("review-task-claimed", command.task_id),
            time=now,
        )
        await enqueue_events(conn, [claimed])
    return CommandReply(
        outcome="accepted", message=decision.message, resource_id=str(command.task_id), status="in-progress"
    )


ROUTE = CommandRoute(subject=CLAIM_REVIEW_TASK, model=ClaimReviewTask, handle=handle)
