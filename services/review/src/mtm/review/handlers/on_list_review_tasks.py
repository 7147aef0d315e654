"""ListReviewTasks: the work queue a pharmacist's tool shows, most urgent first."""

from __future__ import annotations

import asyncpg

from mtm.contracts import CommandReply, ListReviewTasks
from mtm.contracts.subjects import LIST_REVIEW_TASKS
from mtm.platform.runtime import CommandRoute
from mtm.review.adapters.tasks import TaskRepository


async def handle(conn: asyncpg.Connection, query: ListReviewTasks) -> CommandReply:
    tasks = await TaskRepository(conn).list(query.status, query.limit)
    return CommandReply(outcome="accepted", message=f"{len(tasks)} tasks", data=tasks)


ROUTE = CommandRoute(subject=LIST_REVIEW_TASKS, model=ListReviewTasks, handle=handle, transactional=False)
