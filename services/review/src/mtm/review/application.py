"""Review's use cases: open, claim, release, reassign, complete and document reviews; overrides, outcomes, deadlines.

Reactions and timers return the events they cause; commands take the patient's history from the log and return a
decision (the events and the reply).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from mtm.contracts import (
    ActionPlanDelivered,
    ActionPlanOverdue,
    AlertOverridden,
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    FollowUpScheduled,
    MedicationDispensed,
    MedicationsReconciled,
    OverrideAlert,
    ReassignReviewTask,
    RecommendationOutcomeRecorded,
    RecordActionPlanDelivery,
    RecordRecommendationOutcome,
    ReleaseReviewTask,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskCreated,
    ReviewTaskOverdue,
    ReviewTaskReassigned,
    ReviewTaskReleased,
    ScheduledReviewSkipped,
)
from mtm.contracts.events import (
    ActionPlanDelivery,
    ActionPlanDue,
    AlertOverride,
    CareTeam,
    FollowUp,
    RecommendationResult,
    ReviewTask,
    ScheduledReviewSkip,
    TaskClaim,
    TaskCompletion,
    TaskOverdue,
    TaskReassignment,
    TaskRelease,
)
from mtm.contracts.identity import Actor
from mtm.platform.decisions import Decision, PatientHistory, decided
from mtm.review.domain.documentation import DocumentationError, checked_documentation
from mtm.review.domain.fills import FillContext, decide_fill_review
from mtm.review.domain.overrides import regimen
from mtm.review.domain.program import (
    MEMBERSHIP_EVENTS,
    REASON_OF_SERVICE,
    DueReview,
    decide_due_review,
    is_enrolled,
    service_of,
)
from mtm.review.domain.tasks import (
    ESCALATION,
    TASK_EVENTS,
    TaskRecord,
    decide_claim,
    decide_completion,
    decide_reassignment,
    decide_release,
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


class MemberRecords(Protocol):
    """What review's projection knows of a member when a fill arrives."""

    async def fill_context(self, event: MedicationDispensed) -> FillContext: ...


async def review_fill(
    event: MedicationDispensed, *, check: DrugChecker, records: MemberRecords
) -> list[ReviewTaskCreated]:
    """A pharmacy fill → the drug checks on the member's list with and without it → a targeted review when the fill
    raises a high-severity alert that is new for this member (one review per finding, whatever the fills)."""
    context = await records.fill_context(event)
    task = decide_fill_review(event.patient_id, event.id, event.time, event.data, context, check)
    if task is None:
        return []
    return [
        event.caused(
            ReviewTaskCreated,
            source=SOURCE,
            data=task,
            event_id=derived_event_id("review-task-created", task.task_id),
        )
    ]


def _task(history: PatientHistory, task_id: uuid.UUID) -> TaskRecord | None:
    return fold_task(history.of(*TASK_EVENTS), task_id)


def claim_task(history: PatientHistory, command: ClaimReviewTask, actor: Actor, now: datetime) -> Decision:
    """Exactly one pharmacist wins a task: the decision is made on the log and appended only if it did not move."""
    record = _task(history, command.task_id)
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


def release_task(history: PatientHistory, command: ReleaseReviewTask, actor: Actor, now: datetime) -> Decision:
    """The owner (or an admin) gives a claimed task back to the queue."""
    record = _task(history, command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    decision = decide_release(record.state, actor)
    if decision.outcome == "conflict":
        return Decision.refuse("conflict", decision.message, resource_id=task_id, status=record.state.status)
    reply = CommandReply(outcome="accepted", message=decision.message, resource_id=task_id, status="requested")
    if decision.outcome == "already":
        return Decision(reply)
    assert record.state.owner is not None
    release = TaskRelease(task_id=command.task_id, pharmacist_id=record.state.owner, reason=command.reason, actor=actor)
    event_id = derived_event_id(f"review-task-released:{record.state.moves + 1}", command.task_id)
    released = decided(ReviewTaskReleased, command, record, source=SOURCE, data=release, event_id=event_id, at=now)
    return Decision(reply, (released,))


def reassign_task(history: PatientHistory, command: ReassignReviewTask, actor: Actor, now: datetime) -> Decision:
    """The owner (or an admin) hands a task to another pharmacist, who then holds it."""
    record = _task(history, command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    decision = decide_reassignment(record.state, actor, command.pharmacist_id)
    if decision.outcome == "conflict":
        return Decision.refuse("conflict", decision.message, resource_id=task_id, status=record.state.status)
    reply = CommandReply(outcome="accepted", message=decision.message, resource_id=task_id, status="in-progress")
    if decision.outcome == "already":
        return Decision(reply)
    move = TaskReassignment(
        task_id=command.task_id,
        from_pharmacist_id=record.state.owner,
        to_pharmacist_id=command.pharmacist_id,
        actor=actor,
    )
    event_id = derived_event_id(f"review-task-reassigned:{record.state.moves + 1}", command.task_id)
    moved = decided(ReviewTaskReassigned, command, record, source=SOURCE, data=move, event_id=event_id, at=now)
    return Decision(reply, (moved,))


def complete_task(history: PatientHistory, command: CompleteReviewTask, actor: Actor, now: datetime) -> Decision:
    """The claiming pharmacist documents the review; what it counts as for CMS follows from the member's enrolment.

    Recommendations for the prescriber go on to referral; each follow-up becomes a targeted review when due.
    """
    record = _task(history, command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    decision = decide_completion(record.state, actor.acting_as)
    if decision.outcome != "accepted":
        return Decision.refuse("conflict", decision.message, resource_id=task_id, status=record.state.status)
    if record.task.reason == "comprehensive-medication-review" and command.documentation is None:
        return Decision.refuse(
            "invalid",
            "documentation: a CMR records its date, delivery method, recipient and provider",
            resource_id=task_id,
        )
    needing = sum(1 for r in command.recommendations if r.needs_prescriber)
    if needing and record.task.care_team.responsible_physician_id is None:
        # Refused here, where the pharmacist hears it, rather than parked later by referral with nobody to ask.
        return Decision.refuse(
            "invalid",
            f"recommendations: {needing} need the prescriber, but the patient's care team names no primary-care or "
            "attending physician to refer them to; record them for the patient, or ask the prescriber outside mtm",
            resource_id=task_id,
        )
    documentation = None
    if command.documentation is not None:
        try:
            documentation = checked_documentation(
                command.documentation, record.task, command.recommendations, _current_items(history, record)
            )
        except DocumentationError as exc:
            return Decision.refuse("invalid", str(exc), resource_id=task_id)
    completion = TaskCompletion(
        task_id=command.task_id,
        pharmacist_id=actor.acting_as,
        note=command.note,
        recommendations=command.recommendations,
        care_team=record.task.care_team,
        actor=actor,
        service=service_of(record.task.reason, is_enrolled(history.of(*MEMBERSHIP_EVENTS))),
        documentation=documentation,
    )
    event_id = derived_event_id("review-task-completed", command.task_id)
    events: list[Any] = [
        decided(ReviewTaskCompleted, command, record, source=SOURCE, data=completion, event_id=event_id, at=now)
    ]
    for number, wanted in enumerate(command.follow_ups, start=1):
        follow_up = FollowUp(
            follow_up_id=derived_event_id(f"follow-up:{number}", command.task_id),
            task_id=command.task_id,
            due=wanted.due,
            reason=wanted.reason,
            actor=actor,
        )
        follow_up_event = derived_event_id("follow-up-scheduled", follow_up.follow_up_id)
        events.append(
            decided(FollowUpScheduled, command, record, source=SOURCE, data=follow_up, event_id=follow_up_event, at=now)
        )
    reply = CommandReply(outcome="accepted", message=decision.message, resource_id=task_id, status="completed")
    return Decision(reply, tuple(events))


def _current_items(history: PatientHistory, record: TaskRecord) -> tuple:
    """The medications the review starts from: the task's own, else the member's latest reconciliation."""
    if record.task.items:
        return record.task.items
    reconciled = history.of(MedicationsReconciled)
    return reconciled[-1].data.items if reconciled else ()


def override_alert(history: PatientHistory, command: OverrideAlert, actor: Actor, now: datetime) -> Decision:
    """A pharmacist silences one alert of a task with a reason, until the drugs it is about change."""
    record = _task(history, command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    if command.alert >= len(record.task.alerts):
        return Decision.refuse(
            "invalid", f"alert: the task has {len(record.task.alerts)} alert(s)", resource_id=task_id
        )
    override_id = derived_event_id(f"alert-override:{command.alert}", command.task_id)
    reply = CommandReply(outcome="accepted", message="alert overridden", resource_id=str(override_id))
    if any(e.data.override_id == override_id for e in history.of(AlertOverridden)):
        return Decision(reply)
    alert = record.task.alerts[command.alert]
    override = AlertOverride(
        override_id=override_id,
        task_id=command.task_id,
        alert=command.alert,
        rule_id=alert.rule_id,
        kind=alert.kind,
        severity=alert.severity,
        ingredients=alert.ingredients,
        reason_code=command.reason_code,
        reason=command.reason,
        regimen=regimen(alert.ingredients, record.task.items),
        actor=actor,
    )
    event = decided(AlertOverridden, command, record, source=SOURCE, data=override, event_id=override_id, at=now)
    return Decision(reply, (event,))


def record_recommendation_outcome(
    history: PatientHistory, command: RecordRecommendationOutcome, actor: Actor, now: datetime
) -> Decision:
    """What became of a recommendation of a completed review, as the pharmacist learnt it."""
    rec_id = str(command.recommendation_id)
    for completed in history.of(ReviewTaskCompleted):
        if any(r.recommendation_id == command.recommendation_id for r in completed.data.recommendations):
            break
    else:
        return Decision.refuse("not_found", "no such recommendation", resource_id=rec_id)
    earlier = [
        e for e in history.of(RecommendationOutcomeRecorded) if e.data.recommendation_id == command.recommendation_id
    ]
    reply = CommandReply(
        outcome="accepted", message=f"outcome {command.outcome}", resource_id=rec_id, status=command.outcome
    )
    if earlier and earlier[-1].data.outcome == command.outcome and earlier[-1].data.note == command.note:
        return Decision(reply)
    result = RecommendationResult(
        recommendation_id=command.recommendation_id,
        task_id=completed.data.task_id,
        outcome=command.outcome,
        note=command.note,
        actor=actor,
    )
    event_id = derived_event_id(f"recommendation-outcome:{len(earlier) + 1}", command.recommendation_id)
    event = decided(
        RecommendationOutcomeRecorded, command, completed, source=SOURCE, data=result, event_id=event_id, at=now
    )
    return Decision(reply, (event,))


def record_action_plan_delivery(
    history: PatientHistory, command: RecordActionPlanDelivery, actor: Actor, now: datetime
) -> Decision:
    """The member received the written summary (MAP + PML) of a completed CMR."""
    record = _task(history, command.task_id)
    task_id = str(command.task_id)
    if record is None:
        return Decision.refuse("not_found", "no such review task", resource_id=task_id)
    if record.state.status != "completed" or record.task.reason != "comprehensive-medication-review":
        return Decision.refuse("conflict", "only a completed CMR has an action plan to deliver", resource_id=task_id)
    reply = CommandReply(outcome="accepted", message="action plan delivered", resource_id=task_id, status="delivered")
    if any(e.data.task_id == command.task_id for e in history.of(ActionPlanDelivered)):
        return Decision(reply)
    delivery = ActionPlanDelivery(
        task_id=command.task_id, method=command.method, delivered_on=command.delivered_on, actor=actor
    )
    event_id = derived_event_id("action-plan-delivered", command.task_id)
    event = decided(ActionPlanDelivered, command, record, source=SOURCE, data=delivery, event_id=event_id, at=now)
    return Decision(reply, (event,))


# --- timers: what a deadline's passing causes (ids derived from the item and its deadline) -------------------


def task_overdue(row: Mapping[str, Any], now: datetime) -> list[ReviewTaskOverdue]:
    """An unfinished review past its due time: one step up in priority, once per deadline."""
    previous = row["priority"]
    overdue = TaskOverdue(
        task_id=row["task_id"], due=row["due"], priority=ESCALATION[previous], previous_priority=previous
    )
    event_id = derived_event_id(f"review-task-overdue:{row['due'].isoformat()}", row["task_id"])
    return [
        ReviewTaskOverdue.create(
            source=SOURCE,
            patient_id=row["patient_id"],
            data=overdue,
            correlation_id=row["correlation_id"],
            causation_id=row["created_event_id"],
            event_id=event_id,
            time=now,
        )
    ]


def action_plan_overdue(row: Mapping[str, Any], now: datetime) -> list[ActionPlanOverdue]:
    """A CMR's written summary not delivered within 14 days: recorded once."""
    event_id = derived_event_id(f"action-plan-overdue:{row['due'].isoformat()}", row["task_id"])
    return [
        ActionPlanOverdue.create(
            source=SOURCE,
            patient_id=row["patient_id"],
            data=ActionPlanDue(task_id=row["task_id"], due=row["due"]),
            correlation_id=row["correlation_id"],
            causation_id=row["completed_event_id"],
            event_id=event_id,
            time=now,
        )
    ]


def scheduled_review(row: Mapping[str, Any], now: datetime) -> list[ReviewTaskCreated | ScheduledReviewSkipped]:
    """A scheduled or triggered review whose time came: open it, or record why it needs no task of its own."""
    due = DueReview(
        service=row["service"],
        trigger=row["trigger"],
        enrolled=row["enrolled"],
        open_task_id=row["open_task_id"],
        open_task_is_cmr=row["open_task_reason"] == "comprehensive-medication-review",
        reviewed_since_opening=row["reviewed_since_opening"],
    )
    outcome, why = decide_due_review(due)
    schedule_id: uuid.UUID = row["schedule_id"]
    common = {
        "source": SOURCE,
        "patient_id": row["patient_id"],
        "correlation_id": row["correlation_id"],
        "causation_id": row["cause_event_id"],
        "time": now,
    }
    if outcome == "skip":
        skip = ScheduledReviewSkip(
            schedule_id=schedule_id,
            trigger=row["trigger"],
            reason=why,
            covered_by_task_id=row["open_task_id"] if why == "open-review" else None,
        )
        return [
            ScheduledReviewSkipped.create(
                data=skip, event_id=derived_event_id("scheduled-review-skipped", schedule_id), **common
            )
        ]
    latest = row["latest_task"]
    task = ReviewTask(
        task_id=derived_event_id("scheduled-review-task", schedule_id),
        reason=REASON_OF_SERVICE[row["service"]],
        priority="routine",
        focus_event_id=row["cause_event_id"],
        care_team=CareTeam.model_validate(latest["care_team"]) if latest else CareTeam(),
        items=tuple(latest["items"]) if latest else (),
        due=row["due"],
        trigger=row["trigger"],
        schedule_id=schedule_id,
    )
    return [
        ReviewTaskCreated.create(data=task, event_id=derived_event_id("review-task-created", task.task_id), **common)
    ]
