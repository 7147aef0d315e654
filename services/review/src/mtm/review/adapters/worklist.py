"""The pharmacists' worklist and one task whole: what the web app's pages read from review.

Kept apart from `tasks.py` (the task table and the commands' lookups): the worklist's own table is filled from
ReviewTaskCreated by `apply_created`, which the task projection calls for each run of created tasks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from mtm.contracts import CommandReply, GetReviewTask, ListWorklist, ReviewTaskCreated
from mtm.contracts.identity import Actor
from mtm.platform.projection import Tx

INSERT_WORKLIST = """
INSERT INTO task_worklist (task_id, reason, due, alerts_high, alerts_moderate, alerts_low, alerts_interruptive)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int[], $5::int[], $6::int[], $7::int[])
ON CONFLICT (task_id) DO NOTHING
"""
STATUSES = {
    "open": ["requested", "in-progress"],
    "requested": ["requested"],
    "in-progress": ["in-progress"],
    "completed": ["completed"],
}
# Most urgent first, then the earliest due: what a pharmacist should pick up next.
WORKLIST = """
SELECT t.task_id, t.patient_id, t.status, t.priority, t.owner, t.discrepancy_count, t.created_at, t.claimed_at,
       t.completed_at, w.reason, w.due, w.alerts_high, w.alerts_moderate, w.alerts_low, w.alerts_interruptive,
       count(*) OVER () AS total,
       count(*) FILTER (WHERE w.due <= $6 AND t.status <> 'completed') OVER () AS overdue_total
FROM review_tasks t JOIN task_worklist w USING (task_id)
WHERE t.status = ANY($1::text[])
  AND ($2::text IS NULL OR t.priority = $2)
  AND ($3::text IS NULL OR t.owner = $3)
  AND (NOT $4::boolean OR (w.due <= $6 AND t.status <> 'completed'))
  AND ($5::text IS NULL OR t.patient_id = $5)
ORDER BY CASE t.priority WHEN 'stat' THEN 0 WHEN 'asap' THEN 1 WHEN 'urgent' THEN 2 ELSE 3 END,
         w.due NULLS LAST, t.created_at, t.task_id
OFFSET $7 LIMIT $8
"""
GET_TASK = """
SELECT task_id, patient_id, correlation_id, status, priority, owner, created_event, completion, created_at,
       claimed_at, completed_at
FROM review_tasks WHERE task_id = $1
"""


async def apply_created(tx: Tx, created: Sequence[ReviewTaskCreated]) -> None:
    def count(event: ReviewTaskCreated, **match: str) -> int:
        return sum(1 for a in event.data.alerts if all(getattr(a, k) == v for k, v in match.items()))

    await tx.conn.execute(
        INSERT_WORKLIST,
        [e.data.task_id for e in created],
        [e.data.reason for e in created],
        [e.data.due for e in created],
        [count(e, severity="high") for e in created],
        [count(e, severity="moderate") for e in created],
        [count(e, severity="low") for e in created],
        [count(e, tier="interruptive") for e in created],
    )


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def _page(
    conn: asyncpg.Connection, query: ListWorklist, now: datetime, offset: int, limit: int
) -> list[asyncpg.Record]:
    statuses = STATUSES[query.status]
    return await conn.fetch(
        WORKLIST, statuses, query.priority, query.owner, query.overdue, query.patient_id, now, offset, limit
    )


async def worklist(conn: asyncpg.Connection, query: ListWorklist, actor: Actor) -> CommandReply:
    now = datetime.now(UTC)
    rows = await _page(conn, query, now, query.offset, query.limit)
    tasks = [
        {
            "task_id": str(r["task_id"]),
            "patient": f"Patient/{r['patient_id']}",
            "reason": r["reason"],
            "status": r["status"],
            "priority": r["priority"],
            "owner": r["owner"],
            "due": _when(r["due"]),
            "overdue": r["due"] is not None and r["due"] <= now and r["status"] != "completed",
            "alerts": {
                "high": r["alerts_high"],
                "moderate": r["alerts_moderate"],
                "low": r["alerts_low"],
                "interruptive": r["alerts_interruptive"],
            },
            "discrepancies": r["discrepancy_count"],
            "created_at": r["created_at"].isoformat(),
            "claimed_at": _when(r["claimed_at"]),
            "completed_at": _when(r["completed_at"]),
        }
        for r in rows
    ]
    total = rows[0]["total"] if rows else await _count(conn, query, now)
    overdue = rows[0]["overdue_total"] if rows else 0
    data = {"total": total, "overdue": overdue, "offset": query.offset, "tasks": tasks}
    return CommandReply(outcome="accepted", message=f"{len(tasks)} of {total} tasks", data=data)


async def _count(conn: asyncpg.Connection, query: ListWorklist, now: datetime) -> int:
    """The total when the page asked for lies past the end (an offset beyond the last task)."""
    if query.offset == 0:
        return 0
    rows = await _page(conn, query, now, 0, 1)
    return rows[0]["total"] if rows else 0


def _on_care_team(task: dict[str, Any], actor: Actor) -> bool:
    team = task.get("care_team") or {}
    return actor.practitioner_id is not None and actor.practitioner_id in (
        team.get("primary_care_physician_id"),
        team.get("attending_physician_id"),
    )


async def get_task(conn: asyncpg.Connection, query: GetReviewTask, actor: Actor) -> CommandReply:
    """One task whole; a physician sees it only when on the patient's care team."""
    row = await conn.fetchrow(GET_TASK, query.task_id)
    task = json.loads(row["created_event"])["data"] if row is not None else None
    if row is None or (actor.role == "physician" and not _on_care_team(task, actor)):
        return CommandReply(outcome="not_found", message="no such review task", resource_id=str(query.task_id))
    due = task.get("due")
    data = {
        "task_id": str(row["task_id"]),
        "patient": f"Patient/{row['patient_id']}",
        "correlation_id": str(row["correlation_id"]),
        "status": row["status"],
        "priority": row["priority"],
        "owner": row["owner"],
        "created_at": row["created_at"].isoformat(),
        "claimed_at": _when(row["claimed_at"]),
        "completed_at": _when(row["completed_at"]),
        "overdue": due is not None
        and datetime.fromisoformat(due) <= datetime.now(UTC)
        and row["status"] != "completed",
        "task": task,
        "completion": json.loads(row["completion"]) if row["completion"] else None,
    }
    return CommandReply(outcome="accepted", resource_id=str(row["task_id"]), data=data)
