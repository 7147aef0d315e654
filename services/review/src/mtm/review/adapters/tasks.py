"""Review's projection in Postgres: how each event changes the tables, and the deadlines its timers look for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from importlib.resources import files
from typing import Any

import asyncpg

from mtm.contracts import (
    ActionPlanDelivered,
    ActionPlanOverdue,
    AdherenceMeasured,
    AlertOverridden,
    EventEnvelope,
    FollowUpScheduled,
    MedicationDispensed,
    MedicationsReconciled,
    MtmDisenrolled,
    MtmEnrolled,
    RecommendationOutcomeRecorded,
    ReferralAnswered,
    ReferralRequested,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskCreated,
    ReviewTaskOverdue,
    ReviewTaskReassigned,
    ReviewTaskReleased,
    ScheduledReviewSkipped,
)
from mtm.platform.projection import Projection, Tx, runs
from mtm.review.adapters.worklist import apply_created as apply_worklist
from mtm.review.domain.overrides import alert_key
from mtm.review.domain.program import (
    ScheduledReview,
    action_plan_due,
    adherence_review,
    annual_review,
    day_start,
    enrolment_reviews,
    follow_up_review,
    next_quarter_start,
    quarterly_review,
)

INSERT_TASKS = """
INSERT INTO review_tasks
    (task_id, focus_event_id, patient_id, correlation_id, status, priority, alert_count, discrepancy_count,
     created_event, created_at, reason, trigger, due, created_event_id)
SELECT t.task_id, t.focus_event_id, t.patient_id, t.correlation_id, 'requested', t.priority, t.alert_count,
       t.discrepancy_count, t.created_event, t.created_at, t.reason, t.trigger, t.due, t.created_event_id
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::int[], $7::int[], $8::json[],
            $9::timestamptz[], $10::text[], $11::text[], $12::timestamptz[], $13::uuid[])
    AS t(task_id, focus_event_id, patient_id, correlation_id, priority, alert_count, discrepancy_count,
         created_event, created_at, reason, trigger, due, created_event_id)
ON CONFLICT (task_id) DO NOTHING
"""
MARK_CLAIMED = "UPDATE review_tasks SET status = 'in-progress', owner = $2, claimed_at = $3 WHERE task_id = $1"
MARK_RELEASED = "UPDATE review_tasks SET status = 'requested', owner = NULL, claimed_at = NULL WHERE task_id = $1"
MARK_REASSIGNED = "UPDATE review_tasks SET status = 'in-progress', owner = $2, claimed_at = $3 WHERE task_id = $1"
MARK_OVERDUE = "UPDATE review_tasks SET overdue_at = $2, priority = $3 WHERE task_id = $1"
MARK_COMPLETED = """
UPDATE review_tasks SET status = 'completed', completion = $2, completed_at = $3, service = $4, performed_on = $5
WHERE task_id = $1
"""
UPSERT_MEMBER = """
INSERT INTO members (patient_id, enrolled, enrolled_on, disenrolled_on, changed_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (patient_id) DO UPDATE SET enrolled = EXCLUDED.enrolled,
    enrolled_on = COALESCE(EXCLUDED.enrolled_on, members.enrolled_on),
    disenrolled_on = CASE WHEN EXCLUDED.enrolled THEN NULL ELSE EXCLUDED.disenrolled_on END,
    changed_at = EXCLUDED.changed_at
"""
INSERT_SCHEDULE = """
INSERT INTO review_schedule (schedule_id, patient_id, correlation_id, cause_event_id, service, trigger, opens_at, due)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (schedule_id) DO NOTHING
"""
MARK_SCHEDULE_HANDLED = """
UPDATE review_schedule SET handled_at = $2, task_id = $3, skipped = $4 WHERE schedule_id = $1
RETURNING trigger, cause_event_id, opens_at
"""
INSERT_PROBLEM = """
INSERT INTO problems (problem_id, task_id, patient_id, rule_id, problem, recorded_at) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (problem_id) DO NOTHING
"""
INSERT_RECOMMENDATION = """
INSERT INTO recommendations (recommendation_id, task_id, patient_id, problem_id, recommendation, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (recommendation_id) DO NOTHING
"""
MARK_RECOMMENDATION_OUTCOME = """
UPDATE recommendations SET outcome = $2, outcome_note = $3, outcome_at = $4 WHERE recommendation_id = $1
"""
INSERT_REFERRAL = """
INSERT INTO referral_outcomes (referral_id, recommendation_id, patient_id, physician_id, requested_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (referral_id) DO NOTHING
"""
MARK_REFERRAL_ANSWERED = """
UPDATE referral_outcomes SET decision = $2, note = $3, answered_at = $4 WHERE referral_id = $1
"""
INSERT_FOLLOW_UP = """
INSERT INTO follow_ups (follow_up_id, task_id, patient_id, due, reason, scheduled_at) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (follow_up_id) DO NOTHING
"""
INSERT_OVERRIDE = """
INSERT INTO alert_overrides (override_id, task_id, patient_id, alert_key, rule_id, override, overridden_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (override_id) DO NOTHING
"""
INSERT_ACTION_PLAN = """
INSERT INTO action_plans (task_id, patient_id, correlation_id, completed_event_id, performed_on, due)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (task_id) DO NOTHING
"""
MARK_ACTION_PLAN_DELIVERED = "UPDATE action_plans SET delivered_on = $2, delivery_method = $3 WHERE task_id = $1"
MARK_ACTION_PLAN_OVERDUE = "UPDATE action_plans SET overdue_at = $2 WHERE task_id = $1"
# In log order, the last reconciliation applied is the latest (a run holds one per patient: its last).
UPSERT_RECONCILIATIONS = """
INSERT INTO latest_reconciliations (patient_id, event_id, reconciled_at, reconciliation)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::json[])
ON CONFLICT (patient_id) DO UPDATE SET event_id = EXCLUDED.event_id, reconciled_at = EXCLUDED.reconciled_at,
    reconciliation = EXCLUDED.reconciliation
"""
INSERT_FILLS = """
INSERT INTO fills (event_id, patient_id, dispense_id, filled_on, dispense, recorded_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::date[], $5::json[], $6::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""

PROGRAM_EVENTS: tuple[type[EventEnvelope], ...] = (MtmEnrolled, MtmDisenrolled, AdherenceMeasured)
"""Part of the MTM program review reacts to: who is a member, whose adherence calls for a review."""
REFERRAL_EVENTS: tuple[type[EventEnvelope], ...] = (ReferralRequested, ReferralAnswered)
"""How the prescriber answered the recommendations referred to them."""


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    for run in runs(events):
        first = run[0]
        if isinstance(first, ReviewTaskCreated):
            await _insert_tasks(tx, run)  # type: ignore[arg-type]
            await apply_worklist(tx, run)  # type: ignore[arg-type]
        elif isinstance(first, ReviewTaskClaimed):
            await tx.conn.executemany(MARK_CLAIMED, [(e.data.task_id, e.data.pharmacist_id, e.time) for e in run])
        elif isinstance(first, ReviewTaskReleased):
            await tx.conn.executemany(MARK_RELEASED, [(e.data.task_id,) for e in run])
        elif isinstance(first, ReviewTaskReassigned):
            await tx.conn.executemany(MARK_REASSIGNED, [(e.data.task_id, e.data.to_pharmacist_id, e.time) for e in run])
        elif isinstance(first, ReviewTaskOverdue):
            await tx.conn.executemany(MARK_OVERDUE, [(e.data.task_id, e.time, e.data.priority) for e in run])
        elif isinstance(first, MedicationsReconciled):
            await _reconciled(tx.conn, run)  # type: ignore[arg-type]
        elif isinstance(first, MedicationDispensed):
            await _dispensed(tx.conn, run)  # type: ignore[arg-type]
        elif isinstance(first, ReviewTaskCompleted):
            for event in run:
                await _completed(tx.conn, event)  # type: ignore[arg-type]
        else:
            for event in run:
                await APPLY_ONE[type(event)](tx.conn, event)


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
        [e.data.reason for e in created],
        [e.data.trigger for e in created],
        [e.data.due for e in created],
        [e.id for e in created],
    )
    scheduled = [e for e in created if e.data.schedule_id is not None]
    for event in scheduled:
        await _schedule_handled(tx.conn, event, event.data.schedule_id, event.data.task_id, None)  # type: ignore[arg-type]


async def _completed(conn: asyncpg.Connection, event: ReviewTaskCompleted) -> None:
    done = event.data
    documentation = done.documentation
    performed_on = documentation.performed_on if documentation else None
    await conn.execute(MARK_COMPLETED, done.task_id, done.model_dump_json(), event.time, done.service, performed_on)
    for problem in documentation.problems if documentation else ():
        await conn.execute(
            INSERT_PROBLEM,
            problem.problem_id,
            done.task_id,
            event.patient_id,
            problem.rule_id,
            problem.model_dump_json(),
            event.time,
        )
    for rec in done.recommendations:
        await conn.execute(
            INSERT_RECOMMENDATION,
            rec.recommendation_id,
            done.task_id,
            event.patient_id,
            rec.problem_id,
            rec.model_dump_json(),
            event.time,
        )
    if done.service == "cmr" and performed_on is not None:
        await conn.execute(
            INSERT_ACTION_PLAN,
            done.task_id,
            event.patient_id,
            event.correlation_id,
            event.id,
            performed_on,
            action_plan_due(performed_on),
        )
        await _schedule(conn, event, annual_review(event.id, performed_on))


async def _schedule(conn: asyncpg.Connection, cause: EventEnvelope, review: ScheduledReview) -> None:
    await conn.execute(
        INSERT_SCHEDULE,
        review.schedule_id,
        cause.patient_id,
        cause.correlation_id,
        cause.id,
        review.service,
        review.trigger,
        review.opens_at,
        review.due,
    )


async def _schedule_handled(
    conn: asyncpg.Connection, event: EventEnvelope, schedule_id: Any, task_id: Any, skipped: str | None
) -> None:
    """Mark a scheduled review handled; a quarterly one schedules the next quarter's while the member stays."""
    row = await conn.fetchrow(MARK_SCHEDULE_HANDLED, schedule_id, event.time, task_id, skipped)
    if row is not None and row["trigger"] == "quarterly" and skipped != "not-enrolled":
        review = quarterly_review(event.patient_id, next_quarter_start(row["opens_at"]))
        await conn.execute(
            INSERT_SCHEDULE,
            review.schedule_id,
            event.patient_id,
            event.correlation_id,
            row["cause_event_id"],
            review.service,
            review.trigger,
            review.opens_at,
            review.due,
        )


async def _skipped(conn: asyncpg.Connection, event: ScheduledReviewSkipped) -> None:
    skip = event.data
    await _schedule_handled(conn, event, skip.schedule_id, skip.covered_by_task_id, skip.reason)


async def _enrolled(conn: asyncpg.Connection, event: MtmEnrolled) -> None:
    await conn.execute(UPSERT_MEMBER, event.patient_id, True, event.data.enrolled_on, None, event.time)
    for review in enrolment_reviews(event.id, event.patient_id, day_start(event.data.enrolled_on)):
        await _schedule(conn, event, review)


async def _disenrolled(conn: asyncpg.Connection, event: MtmDisenrolled) -> None:
    await conn.execute(UPSERT_MEMBER, event.patient_id, False, None, event.data.disenrolled_on, event.time)


async def _adherence(conn: asyncpg.Connection, event: AdherenceMeasured) -> None:
    # A class newly below the threshold calls for a targeted review; one measured low again does not.
    if event.data.newly_below:
        await _schedule(conn, event, adherence_review(event.id, event.time))


async def _referral_requested(conn: asyncpg.Connection, event: ReferralRequested) -> None:
    referral = event.data
    await conn.execute(
        INSERT_REFERRAL,
        referral.referral_id,
        referral.recommendation.recommendation_id,
        event.patient_id,
        referral.physician_id,
        event.time,
    )


async def _referral_answered(conn: asyncpg.Connection, event: ReferralAnswered) -> None:
    answer = event.data
    await conn.execute(MARK_REFERRAL_ANSWERED, answer.referral_id, answer.decision, answer.note, event.time)


async def _follow_up(conn: asyncpg.Connection, event: FollowUpScheduled) -> None:
    follow_up = event.data
    await conn.execute(
        INSERT_FOLLOW_UP,
        follow_up.follow_up_id,
        follow_up.task_id,
        event.patient_id,
        follow_up.due,
        follow_up.reason,
        event.time,
    )
    await _schedule(conn, event, follow_up_review(follow_up.follow_up_id, follow_up.due))


async def _overridden(conn: asyncpg.Connection, event: AlertOverridden) -> None:
    override = event.data
    key = alert_key(override)
    await conn.execute(
        INSERT_OVERRIDE,
        override.override_id,
        override.task_id,
        event.patient_id,
        key,
        override.rule_id,
        override.model_dump_json(),
        event.time,
    )


async def _outcome(conn: asyncpg.Connection, event: RecommendationOutcomeRecorded) -> None:
    result = event.data
    await conn.execute(MARK_RECOMMENDATION_OUTCOME, result.recommendation_id, result.outcome, result.note, event.time)


async def _delivered(conn: asyncpg.Connection, event: ActionPlanDelivered) -> None:
    await conn.execute(MARK_ACTION_PLAN_DELIVERED, event.data.task_id, event.data.delivered_on, event.data.method)


async def _reconciled(conn: asyncpg.Connection, run: Sequence[MedicationsReconciled]) -> None:
    """A run of reconciliations in one statement (one row per patient: an upsert may not touch a row twice)."""
    latest = list({event.patient_id: event for event in run}.values())
    await conn.execute(
        UPSERT_RECONCILIATIONS,
        [e.patient_id for e in latest],
        [e.id for e in latest],
        [e.time for e in latest],
        [e.data.model_dump_json() for e in latest],
    )


async def _dispensed(conn: asyncpg.Connection, run: Sequence[MedicationDispensed]) -> None:
    await conn.execute(
        INSERT_FILLS,
        [e.id for e in run],
        [e.patient_id for e in run],
        [e.data.dispense_id for e in run],
        [e.data.filled_on for e in run],
        [e.data.model_dump_json() for e in run],
        [e.time for e in run],
    )


async def _plan_overdue(conn: asyncpg.Connection, event: ActionPlanOverdue) -> None:
    await conn.execute(MARK_ACTION_PLAN_OVERDUE, event.data.task_id, event.time)


APPLY_ONE: dict[type[EventEnvelope], Any] = {
    ScheduledReviewSkipped: _skipped,
    MtmEnrolled: _enrolled,
    MtmDisenrolled: _disenrolled,
    AdherenceMeasured: _adherence,
    ReferralRequested: _referral_requested,
    ReferralAnswered: _referral_answered,
    FollowUpScheduled: _follow_up,
    AlertOverridden: _overridden,
    RecommendationOutcomeRecorded: _outcome,
    ActionPlanDelivered: _delivered,
    ActionPlanOverdue: _plan_overdue,
}

# Review's tables with a patient_id column (erasure deletes by it); `task_worklist` is found through `review_tasks`.
PATIENT_TABLES = (
    "review_tasks",
    "members",
    "review_schedule",
    "problems",
    "recommendations",
    "referral_outcomes",
    "follow_ups",
    "alert_overrides",
    "action_plans",
    "latest_reconciliations",
    "fills",
)

TASKS = Projection(
    migrations=files("mtm.review") / "migrations" / "projection",
    tables=(*PATIENT_TABLES, "task_worklist"),
    handles=(
        ReviewTaskCreated,
        ReviewTaskClaimed,
        ReviewTaskReleased,
        ReviewTaskReassigned,
        ReviewTaskOverdue,
        ReviewTaskCompleted,
        MedicationsReconciled,
        MedicationDispensed,
        *APPLY_ONE,
    ),
    apply=apply,
    # Rows that name no patient go first, found through the rows that do.
    erase=(
        "DELETE FROM task_worklist WHERE task_id IN (SELECT task_id FROM review_tasks WHERE patient_id = $1)",
        *(f"DELETE FROM {table} WHERE patient_id = $1" for table in PATIENT_TABLES),
    ),
)

# --- what commands act on -----------------------------------------------------------------------------------

PATIENT_OF_TASK = "SELECT patient_id FROM review_tasks WHERE task_id = $1"
PATIENT_OF_RECOMMENDATION = "SELECT patient_id FROM recommendations WHERE recommendation_id = $1"


async def patient_of_task(conn: asyncpg.Connection, command: Any) -> str | None:
    return await conn.fetchval(PATIENT_OF_TASK, command.task_id)


async def patient_of_recommendation(conn: asyncpg.Connection, command: Any) -> str | None:
    return await conn.fetchval(PATIENT_OF_RECOMMENDATION, command.recommendation_id)


# --- what the timers look for: deadlines passed and not yet marked --------------------------------------------

OVERDUE_TASKS = """
SELECT task_id, patient_id, correlation_id, created_event_id, due, priority FROM review_tasks
WHERE status <> 'completed' AND overdue_at IS NULL AND due <= $1
ORDER BY due LIMIT $2
"""
OVERDUE_ACTION_PLANS = """
SELECT task_id, patient_id, correlation_id, completed_event_id, due FROM action_plans
WHERE delivered_on IS NULL AND overdue_at IS NULL AND due <= $1
ORDER BY due LIMIT $2
"""
# One scheduled review per member per round: the next round sees the task this one opened.
DUE_REVIEWS = """
SELECT DISTINCT ON (s.patient_id)
       s.schedule_id, s.patient_id, s.correlation_id, s.cause_event_id, s.service, s.trigger, s.due,
       COALESCE(m.enrolled, false) AS enrolled, o.task_id AS open_task_id, o.reason AS open_task_reason,
       EXISTS (
           SELECT 1 FROM review_tasks d
           WHERE d.patient_id = s.patient_id AND d.status = 'completed' AND d.completed_at >= s.opens_at
             AND (d.service = 'cmr' OR d.service = s.service)
       ) AS reviewed_since_opening,
       (SELECT l.created_event -> 'data' FROM review_tasks l
        WHERE l.patient_id = s.patient_id AND json_array_length(l.created_event -> 'data' -> 'items') > 0
        ORDER BY l.created_at DESC LIMIT 1) AS latest_task
FROM review_schedule s
LEFT JOIN members m ON m.patient_id = s.patient_id
LEFT JOIN LATERAL (
    SELECT t.task_id, t.reason FROM review_tasks t
    WHERE t.patient_id = s.patient_id AND t.status <> 'completed'
    ORDER BY (t.reason = 'comprehensive-medication-review') DESC, t.created_at LIMIT 1
) o ON true
WHERE s.handled_at IS NULL AND s.opens_at <= $1
ORDER BY s.patient_id, s.opens_at
LIMIT $2
"""


async def overdue_tasks(conn: asyncpg.Connection, now: datetime, limit: int) -> Sequence[Any]:
    return await conn.fetch(OVERDUE_TASKS, now, limit)


async def overdue_action_plans(conn: asyncpg.Connection, now: datetime, limit: int) -> Sequence[Any]:
    return await conn.fetch(OVERDUE_ACTION_PLANS, now, limit)


async def due_reviews(conn: asyncpg.Connection, now: datetime, limit: int) -> Sequence[dict[str, Any]]:
    rows = await conn.fetch(DUE_REVIEWS, now, limit)
    return [
        {**dict(row), "latest_task": json.loads(row["latest_task"]) if row["latest_task"] else None} for row in rows
    ]
