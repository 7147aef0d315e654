"""Review task decisions: open a task from a reconciliation, and who may claim or complete it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from mtm.contracts import Alert, MedicationsReconciled
from mtm.contracts.events import ReviewTask, TaskPriority

TaskStatus = Literal["requested", "in-progress", "completed"]
# Post-discharge review is due within 72 hours: CMS transitional care management asks for contact
# within 2 business days of discharge.
POST_DISCHARGE_REVIEW_WINDOW = timedelta(hours=72)
_NAMESPACE = uuid.UUID("6b1d6f0e-39a4-4a57-9d6f-3c8d9a0e7f21")


def task_id_for(reconciled_event_id: uuid.UUID) -> uuid.UUID:
    """One task per reconciliation, whatever the number of deliveries."""
    return uuid.uuid5(_NAMESPACE, f"review-task:{reconciled_event_id}")


def derived_event_id(kind: str, source_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{source_id}")


def open_task(
    event: MedicationsReconciled, alerts: Sequence[Alert], priority: TaskPriority, *, now: datetime
) -> ReviewTask:
    rec = event.data
    start = rec.discharged_at or now
    return ReviewTask(
        task_id=task_id_for(event.id),
        priority=priority,
        focus_event_id=event.id,
        encounter_id=rec.encounter_id,
        care_team=rec.care_team,
        items=rec.items,
        discrepancies=rec.discrepancies,
        alerts=tuple(alerts),
        due=start + POST_DISCHARGE_REVIEW_WINDOW,
    )


@dataclass(frozen=True)
class TaskState:
    task_id: uuid.UUID
    status: TaskStatus
    owner: str | None


@dataclass(frozen=True)
class Decision:
    outcome: Literal["accepted", "already", "conflict"]
    message: str


def decide_claim(task: TaskState, pharmacist_id: str) -> Decision:
    if task.status == "completed":
        return Decision("conflict", f"task is completed by {task.owner}")
    if task.status == "in-progress":
        if task.owner == pharmacist_id:
            return Decision("already", "task is already claimed by you")
        return Decision("conflict", f"task is already claimed by {task.owner}")
    return Decision("accepted", "task claimed")


def decide_completion(task: TaskState, pharmacist_id: str) -> Decision:
    if task.status == "completed":
        return Decision("conflict", "task is already completed")
    if task.status == "requested":
        return Decision("conflict", "claim the task before completing it")
    if task.owner != pharmacist_id:
        return Decision("conflict", f"task is claimed by {task.owner}")
    return Decision("accepted", "task completed")
