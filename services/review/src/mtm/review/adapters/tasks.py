"""Review tasks in Postgres: how events change the table, and what tools read from it."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import asyncpg

from mtm.contracts import (
    CommandReply,
    EventEnvelope,
    ListReviewTasks,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskCreated,
)
from mtm.contracts.identity import Actor
from mtm.platform.projection import Projection, Tx, runs
from mtm.review.adapters.worklist import apply_created as apply_worklist

INSERT_TASKS = """
INSERT INTO review_tasks
    (task_id, focus_event_id, patient_id, correlation_id, status, priority, alert_count, discrepancy_count,
     created_event, created_at)
SELECT t.task_id, t.focus_event_id, t.patient_id, t.correlation_id, 'requested', t.priority, t.alert_count,
       t.discrepancy_count, t.created_event, t.created_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::int[], $7::int[], $8::json[],
            $9::timestamptz[])
    AS t(task_id, focus_event_id, patient_id, correlation_id, priority, alert_count, discrepancy_count,
         created_event, created_at)
ON CONFLICT (focus_event_id) DO NOTHING
"""
MARK_CLAIMED = "UPDATE review_tasks SET status = 'in-progress', owner = $2, claimed_at = $3 WHERE task_id = $1"
MARK_COMPLETED = """
UPDATE review_tasks SET status = 'completed', completion = $2, completed_at = $3 WHERE task_id = $1
"""
PATIENT_OF_TASK = "SELECT patient_id FROM review_tasks WHERE task_id = $1"
LIST_TASKS = """
SELECT task_id, patient_id, status, priority, owner, alert_count, discrepancy_count, created_at,
       created_event::json #>> '{data,reason}' AS reason, created_event::json #>> '{data,due}' AS due
FROM review_tasks
WHERE ($1::text IS NULL OR status = $1)
ORDER BY CASE priority WHEN 'stat' THEN 0 WHEN 'asap' THEN 1 WHEN 'urgent' THEN 2 ELSE 3 END, created_at, task_id
LIMIT $2 OFFSET $3
"""


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    for run in runs(events):
        if isinstance(run[0], ReviewTaskCreated):
            await _insert_tasks(tx, run)  # type: ignore[arg-type]
            await apply_worklist(tx, run)  # type: ignore[arg-type]
        elif isinstance(run[0], ReviewTaskClaimed):
            await tx.conn.executemany(MARK_CLAIMED, [(e.data.task_id, e.data.pharmacist_id, e.time) for e in run])
        elif isinstance(run[0], ReviewTaskCompleted):
            await tx.conn.executemany(MARK_COMPLETED, [(e.data.task_id, e.data.model_dump_json(), e.time) for e in run])


async def _insert_tasks(tx: Tx, created: Sequence[ReviewTaskCreated]) -> None:
    await tx.conn.execute(
        INSERT_TASKS,
        [e.data.task_id for e in created],
        [e.data.focus_event_id for e in created],
        [e.patient_id for e in created],
        [e.correlation_id for e in created],
        [e.data.priority for e in created],
        [len(e.data.alerts) for e in created],
        [len(e.data.discrepancies) for e in created],
        [tx.body(e) for e in created],
        [e.time for e in created],
    )


TASKS = Projection(
    migrations=files("mtm.review") / "migrations" / "projection",
    tables=("review_tasks", "task_worklist"),
    handles=(ReviewTaskCreated, ReviewTaskClaimed, ReviewTaskCompleted),
    apply=apply,
    erase=("DELETE FROM review_tasks WHERE patient_id = $1",),
)


async def patient_of_task(conn: asyncpg.Connection, command: Any) -> str | None:
    return await conn.fetchval(PATIENT_OF_TASK, command.task_id)


async def list_tasks(conn: asyncpg.Connection, query: ListReviewTasks, actor: Actor) -> CommandReply:
    """One page of task summaries (a whole task, with its lists and alerts, comes from `get_task`)."""
    rows = await conn.fetch(LIST_TASKS, query.status, query.limit, query.offset)
    tasks = [
        {
            "task_id": str(r["task_id"]),
            "patient": f"Patient/{r['patient_id']}",
            "status": r["status"],
            "priority": r["priority"],
            "reason": r["reason"],
            "due": r["due"],
            "owner": r["owner"],
            "alerts": r["alert_count"],
            "discrepancies": r["discrepancy_count"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
    return CommandReply(outcome="accepted", message=f"{len(tasks)} tasks", data=tasks)
