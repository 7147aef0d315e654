"""Review tasks in Postgres, in domain terms."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from mtm.contracts import ReviewTaskCreated
from mtm.contracts.events import ReviewTask, TaskCompletion
from mtm.review.domain.tasks import TaskState

INSERT_TASKS = """
INSERT INTO review_tasks
    (task_id, focus_event_id, patient_id, correlation_id, status, priority, alert_count, discrepancy_count,
     created_event)
SELECT t.task_id, t.focus_event_id, t.patient_id, t.correlation_id, 'requested', t.priority, t.alert_count,
       t.discrepancy_count, t.created_event
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::int[], $7::int[], $8::json[])
    AS t(task_id, focus_event_id, patient_id, correlation_id, priority, alert_count, discrepancy_count,
         created_event)
ON CONFLICT (focus_event_id) DO NOTHING
RETURNING task_id
"""
LOCK_TASK = """
SELECT task_id, status, owner, patient_id, correlation_id, created_event FROM review_tasks WHERE task_id = $1 FOR UPDATE
"""
MARK_CLAIMED = "UPDATE review_tasks SET status = 'in-progress', owner = $2, claimed_at = $3 WHERE task_id = $1"
MARK_COMPLETED = """
UPDATE review_tasks SET status = 'completed', completion = $2, completed_at = $3 WHERE task_id = $1
"""
LIST_TASKS = """
SELECT task_id, patient_id, status, priority, owner, alert_count, discrepancy_count, created_at, created_event
FROM review_tasks
WHERE ($1::text IS NULL OR status = $1)
ORDER BY CASE priority WHEN 'stat' THEN 0 WHEN 'asap' THEN 1 WHEN 'urgent' THEN 2 ELSE 3 END, created_at
LIMIT $2
"""


class NewTask:
    __slots__ = ("correlation_id", "created_event", "patient_id", "task")

    def __init__(self, task: ReviewTask, patient_id: str, correlation_id: uuid.UUID, created_event: str) -> None:
        self.task = task
        self.patient_id = patient_id
        self.correlation_id = correlation_id
        self.created_event = created_event
        """ReviewTaskCreated, serialized once for both this table and the outbox."""


class LockedTask:
    __slots__ = ("correlation_id", "patient_id", "state", "task")

    def __init__(self, row: asyncpg.Record) -> None:
        self.state = TaskState(task_id=row["task_id"], status=row["status"], owner=row["owner"])
        self.patient_id: str = row["patient_id"]
        self.correlation_id: uuid.UUID = row["correlation_id"]
        self.task = ReviewTaskCreated.model_validate_json(row["created_event"]).data


class TaskRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_all(self, tasks: Sequence[NewTask]) -> set[uuid.UUID]:
        """Insert tasks; returns the ids that were new (a reconciliation opens at most one task)."""
        rows = await self._conn.fetch(
            INSERT_TASKS,
            [t.task.task_id for t in tasks],
            [t.task.focus_event_id for t in tasks],
            [t.patient_id for t in tasks],
            [t.correlation_id for t in tasks],
            [t.task.priority for t in tasks],
            [len(t.task.alerts) for t in tasks],
            [len(t.task.discrepancies) for t in tasks],
            [t.created_event for t in tasks],
        )
        return {row["task_id"] for row in rows}

    async def lock(self, task_id: uuid.UUID) -> LockedTask | None:
        row = await self._conn.fetchrow(LOCK_TASK, task_id)
        return LockedTask(row) if row else None

    async def mark_claimed(self, task_id: uuid.UUID, pharmacist_id: str, at: datetime) -> None:
        await self._conn.execute(MARK_CLAIMED, task_id, pharmacist_id, at)

    async def mark_completed(self, task_id: uuid.UUID, completion: TaskCompletion, at: datetime) -> None:
        await self._conn.execute(MARK_COMPLETED, task_id, completion.model_dump_json(), at)

    async def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._conn.fetch(LIST_TASKS, status, limit)
        return [
            {
                "task_id": str(r["task_id"]),
                "patient": f"Patient/{r['patient_id']}",
                "status": r["status"],
                "priority": r["priority"],
                "owner": r["owner"],
                "alerts": r["alert_count"],
                "discrepancies": r["discrepancy_count"],
                "created_at": r["created_at"].isoformat(),
                "task": json.loads(r["created_event"])["data"],
            }
            for r in rows
        ]
