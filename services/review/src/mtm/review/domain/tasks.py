"""Review task decisions: open a task from a reconciliation, fold a task's history, who may claim or complete it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from mtm.contracts import (
    Alert,
    EventEnvelope,
    MedicationsReconciled,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskOverdue,
    ReviewTaskReassigned,
    ReviewTaskReleased,
)
from mtm.contracts import ReviewTaskCreated as Created
from mtm.contracts.events import ReviewTask, TaskPriority
from mtm.contracts.identity import Actor

TaskStatus = Literal["requested", "in-progress", "completed"]
# The post-discharge medication review is due within 7 days of discharge: the service level, well inside
# HEDIS Medication Reconciliation Post-Discharge (MRP), which counts a reconciliation from the discharge date
# through 30 days after it.
POST_DISCHARGE_REVIEW_WINDOW = timedelta(days=7)
_NAMESPACE = uuid.UUID("6b1d6f0e-39a4-4a57-9d6f-3c8d9a0e7f21")
TASK_EVENTS: tuple[type[EventEnvelope], ...] = (
    Created,
    ReviewTaskClaimed,
    ReviewTaskReleased,
    ReviewTaskReassigned,
    ReviewTaskOverdue,
    ReviewTaskCompleted,
)
"""The events a task's state is folded from."""
ESCALATION: dict[TaskPriority, TaskPriority] = {"routine": "urgent", "urgent": "asap", "asap": "stat", "stat": "stat"}
"""An overdue task moves one step up the FHIR request priority scale."""


def task_id_for(reconciled_event_id: uuid.UUID) -> uuid.UUID:
    """One task per reconciliation, whatever the number of deliveries."""
    return uuid.uuid5(_NAMESPACE, f"review-task:{reconciled_event_id}")


def derived_event_id(kind: str, source_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{source_id}")


def open_task(event: MedicationsReconciled, alerts: Sequence[Alert], priority: TaskPriority) -> ReviewTask:
    """The task a reconciliation opens, due a fixed time after discharge (or after the reconciliation)."""
    rec = event.data
    start = rec.discharged_at or event.time
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
        trigger="discharge",
    )


@dataclass(frozen=True)
class TaskState:
    task_id: uuid.UUID
    status: TaskStatus
    owner: str | None
    claims: int = 0
    moves: int = 0
    """Releases and reassignments so far (each such event's id is derived from its number)."""
    priority: TaskPriority = "routine"


@dataclass(frozen=True)
class TaskRecord:
    """A task as its events tell it: what was opened, and where it stands."""

    task: ReviewTask
    state: TaskState
    patient_id: str
    correlation_id: uuid.UUID


def fold_task(events: Iterable[EventEnvelope], task_id: uuid.UUID) -> TaskRecord | None:
    """The task's record after its events, in log order; None when it was never opened."""
    record: TaskRecord | None = None
    for event in events:
        if isinstance(event, Created) and event.data.task_id == task_id:
            state = TaskState(task_id=task_id, status="requested", owner=None, priority=event.data.priority)
            record = TaskRecord(event.data, state, event.patient_id, event.correlation_id)
        elif record is None or getattr(event.data, "task_id", None) != task_id:
            continue
        elif isinstance(event, ReviewTaskClaimed):
            state = replace(
                record.state, status="in-progress", owner=event.data.pharmacist_id, claims=record.state.claims + 1
            )
            record = replace(record, state=state)
        elif isinstance(event, ReviewTaskReleased):
            state = replace(record.state, status="requested", owner=None, moves=record.state.moves + 1)
            record = replace(record, state=state)
        elif isinstance(event, ReviewTaskReassigned):
            owner = event.data.to_pharmacist_id
            state = replace(record.state, status="in-progress", owner=owner, moves=record.state.moves + 1)
            record = replace(record, state=state)
        elif isinstance(event, ReviewTaskOverdue):
            record = replace(record, state=replace(record.state, priority=event.data.priority))
        elif isinstance(event, ReviewTaskCompleted):
            record = replace(record, state=replace(record.state, status="completed"))
    return record


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


def decide_release(task: TaskState, actor: Actor) -> Decision:
    """Its owner, or an admin (a supervisor covering an absence), puts a claimed task back in the queue."""
    if task.status == "completed":
        return Decision("conflict", "task is already completed")
    if task.status == "requested":
        return Decision("already", "task is not claimed")
    if actor.role != "admin" and task.owner != actor.acting_as:
        return Decision("conflict", f"task is claimed by {task.owner}")
    return Decision("accepted", "task released")


def decide_reassignment(task: TaskState, actor: Actor, to_pharmacist_id: str) -> Decision:
    """Its owner hands it on, or an admin assigns any open task; the new owner holds it as if they had claimed it."""
    if task.status == "completed":
        return Decision("conflict", "task is already completed")
    if task.owner == to_pharmacist_id:
        return Decision("already", f"task is already held by {to_pharmacist_id}")
    if actor.role != "admin" and task.owner != actor.acting_as:
        owner = f"claimed by {task.owner}" if task.owner else "not claimed"
        return Decision("conflict", f"task is {owner}: only its owner or an admin reassigns it")
    return Decision("accepted", f"task reassigned to {to_pharmacist_id}")
