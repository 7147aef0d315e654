"""Review's use cases: open a task for a reconciliation, claim it, complete it; each returns the events it causes."""

from __future__ import annotations

from datetime import datetime

from mtm.contracts import (
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    MedicationsReconciled,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskCreated,
)
from mtm.contracts.events import TaskClaim, TaskCompletion
from mtm.contracts.identity import Actor
from mtm.platform.decisions import Decision, PatientHistory, decided
from mtm.review.domain.tasks import (
    TASK_EVENTS,
    decide_claim,
    decide_completion,
    derived_event_id,
    fold_task,
    open_task,
)
from mtm.review.drug_checks import DrugChecker

SOURCE = "mtm/review"


def open_review_task(event: MedicationsReconciled, *, check: DrugChecker) -> list[ReviewTaskCreated]:
    """A reconciliation → drug checks → one review task for pharmacists (its id derived from the reconciliation)."""
    alerts, priority = check(event.data)
    task = open_task(event, alerts, priority)
    return [
        event.caused(
            ReviewTaskCreated,
            source=SOURCE,
            data=task,
            event_id=derived_event_id("review-task-created", task.task_id),
        )
    ]


def claim_task(history: PatientHistory, command: ClaimReviewTask, actor: Actor, now: datetime) -> Decision:
    """Exactly one pharmacist wins a task: the decision is made on the log and appended only if it did not move."""
    record = fold_task(history.of(*TASK_EVENTS), command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    decision = decide_claim(record.state, actor.acting_as)
    if decision.outcome == "conflict":
        return Decision.refuse("conflict", decision.message, resource_id=task_id, status=record.state.status)
    reply = CommandReply(outcome="accepted", message=decision.message, resource_id=task_id, status="in-progress")
    if decision.outcome == "already":
        return Decision(reply)
    claim = TaskClaim(task_id=command.task_id, pharmacist_id=actor.acting_as, actor=actor)
    event_id = derived_event_id(f"review-task-claimed:{record.state.claims + 1}", command.task_id)
    claimed = decided(ReviewTaskClaimed, command, record, source=SOURCE, data=claim, event_id=event_id, at=now)
    return Decision(reply, (claimed,))


def complete_task(history: PatientHistory, command: CompleteReviewTask, actor: Actor, now: datetime) -> Decision:
    """The claiming pharmacist documents the review; recommendations for the prescriber go on to referral."""
    record = fold_task(history.of(*TASK_EVENTS), command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    decision = decide_completion(record.state, actor.acting_as)
    if decision.outcome != "accepted":
        return Decision.refuse("conflict", decision.message, resource_id=task_id, status=record.state.status)
    completion = TaskCompletion(
        task_id=command.task_id,
        pharmacist_id=actor.acting_as,
        note=command.note,
        recommendations=command.recommendations,
        care_team=record.task.care_team,
        actor=actor,
    )
    event_id = derived_event_id("review-task-completed", command.task_id)
    completed = decided(ReviewTaskCompleted, command, record, source=SOURCE, data=completion, event_id=event_id, at=now)
    reply = CommandReply(outcome="accepted", message=decision.message, resource_id=task_id, status="completed")
    return Decision(reply, (completed,))
