"""What pharmacists' tools read from review's tables: the worklist, a patient's record, the action plan, rule stats."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from mtm.contracts import (
    CommandReply,
    GetActionPlan,
    GetReviewRecord,
    ListAlertRuleStats,
    ListReviewTasks,
)
from mtm.contracts.documentation import ActionPlanDocument, PlannedFollowUp, ReviewDocumentation
from mtm.contracts.events import Alert, ReconciledItem
from mtm.contracts.identity import Actor
from mtm.review.domain.overrides import ActiveOverride, alert_key, suppressing
from mtm.review.domain.program import ACTION_PLAN_WINDOW

TASK_COLUMNS = """
t.task_id, t.patient_id, t.status, t.priority, t.reason, t.trigger, t.due, t.owner, t.service, t.alert_count,
t.discrepancy_count, t.created_at, t.claimed_at, t.completed_at, t.overdue_at, t.performed_on, t.created_event,
t.completion
"""
# Most urgent first: priority, then the nearest due time, then the oldest.
LIST_TASKS = f"""
SELECT {TASK_COLUMNS} FROM review_tasks t
WHERE ($1::text IS NULL OR t.status = $1)
  AND ($2::text IS NULL OR t.owner = $2)
  AND ($3::text IS NULL OR t.reason = $3)
  AND ($4::text IS NULL OR t.patient_id = $4)
  AND ($5::boolean IS NULL OR (t.overdue_at IS NOT NULL) = $5)
ORDER BY CASE t.priority WHEN 'stat' THEN 0 WHEN 'asap' THEN 1 WHEN 'urgent' THEN 2 ELSE 3 END,
         t.due NULLS LAST, t.created_at, t.task_id
OFFSET $6 LIMIT $7
"""
# A page of a patient's tasks, newest first, before a (created_at, task_id) cursor; or one task of theirs.
PATIENT_TASKS = f"""
SELECT {TASK_COLUMNS} FROM review_tasks t
WHERE t.patient_id = $1 AND ($2::timestamptz IS NULL OR (t.created_at, t.task_id) < ($2, $3::uuid))
  AND ($5::uuid IS NULL OR t.task_id = $5)
ORDER BY t.created_at DESC, t.task_id DESC
LIMIT $4
"""
OVERRIDES_OF = """
SELECT override_id, task_id, patient_id, alert_key, override, overridden_at FROM alert_overrides
WHERE patient_id = ANY($1::text[]) ORDER BY overridden_at, override_id
"""
MEMBER = "SELECT enrolled, enrolled_on, disenrolled_on FROM members WHERE patient_id = $1"
RECOMMENDATIONS_OF = """
SELECT r.recommendation_id, r.task_id, r.recommendation, r.recorded_at, r.outcome, r.outcome_note, r.outcome_at,
       f.referral_id, f.physician_id, f.decision, f.note AS answer_note, f.answered_at
FROM recommendations r LEFT JOIN referral_outcomes f ON f.recommendation_id = r.recommendation_id
WHERE r.patient_id = $1 AND r.task_id = ANY($2::uuid[]) ORDER BY r.recorded_at, r.recommendation_id
"""
FOLLOW_UPS_OF = """
SELECT follow_up_id, task_id, due, reason FROM follow_ups WHERE patient_id = $1 AND task_id = ANY($2::uuid[])
ORDER BY due, follow_up_id
"""
ACTION_PLANS_OF = """
SELECT task_id, performed_on, due, delivered_on, delivery_method, overdue_at FROM action_plans
WHERE patient_id = $1 AND task_id = ANY($2::uuid[]) ORDER BY performed_on
"""
SCHEDULED_OF = """
SELECT schedule_id, service, trigger, opens_at, due FROM review_schedule
WHERE patient_id = $1 AND handled_at IS NULL ORDER BY opens_at
"""
LATEST_CMR = """
SELECT t.task_id, t.owner, t.completion FROM review_tasks t
WHERE t.patient_id = $1 AND t.status = 'completed' AND t.reason = 'comprehensive-medication-review'
  AND ($2::uuid IS NULL OR t.task_id = $2)
ORDER BY t.performed_on DESC NULLS LAST, t.completed_at DESC LIMIT 1
"""
TASK_FOLLOW_UPS = "SELECT due, reason FROM follow_ups WHERE task_id = $1 ORDER BY due"
ACTION_PLAN = "SELECT delivered_on FROM action_plans WHERE task_id = $1"
# Every alert every task raised, by rule; json_array_elements reads the tasks as published.
RULE_STATS = """
WITH fired AS (
    SELECT COALESCE(a.alert ->> 'rule_id', a.alert ->> 'kind') AS rule, a.alert ->> 'kind' AS kind,
           a.alert ->> 'severity' AS severity, t.task_id
    FROM review_tasks t, json_array_elements(t.created_event -> 'data' -> 'alerts') AS a(alert)
),
rules AS (
    SELECT rule, min(kind) AS kind, min(severity) AS severity, count(*) AS fired, count(DISTINCT task_id) AS tasks
    FROM fired GROUP BY rule
),
overridden AS (
    SELECT COALESCE(rule_id, override ->> 'kind') AS rule, count(*) AS overridden FROM alert_overrides GROUP BY 1
),
acted AS (
    SELECT p.rule_id AS rule, count(DISTINCT p.problem_id) AS problems,
           count(DISTINCT r.recommendation_id) AS recommendations,
           count(DISTINCT r.recommendation_id) FILTER (
               WHERE COALESCE(f.decision, r.outcome) IN ('accepted', 'modified')
           ) AS accepted
    FROM problems p
    LEFT JOIN recommendations r ON r.problem_id = p.problem_id
    LEFT JOIN referral_outcomes f ON f.recommendation_id = r.recommendation_id
    WHERE p.rule_id IS NOT NULL GROUP BY p.rule_id
)
SELECT rules.rule, rules.kind, rules.severity, rules.fired, rules.tasks,
       COALESCE(overridden.overridden, 0) AS overridden, COALESCE(acted.problems, 0) AS problems,
       COALESCE(acted.recommendations, 0) AS recommendations, COALESCE(acted.accepted, 0) AS accepted
FROM rules LEFT JOIN overridden USING (rule) LEFT JOIN acted USING (rule)
ORDER BY rules.fired DESC, rules.rule
OFFSET $1 LIMIT $2
"""


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _overrides_by_patient(rows: Iterable[asyncpg.Record]) -> dict[str, list[tuple[datetime, Any, ActiveOverride]]]:
    found: dict[str, list[tuple[datetime, Any, ActiveOverride]]] = defaultdict(list)
    for row in rows:
        data = json.loads(row["override"])
        active = ActiveOverride(str(row["override_id"]), row["alert_key"], data["severity"], tuple(data["regimen"]))
        found[row["patient_id"]].append((row["overridden_at"], row["task_id"], active))
    return found


def _alerts(task: dict[str, Any], created_at: datetime, overrides: Sequence[tuple[datetime, Any, ActiveOverride]]):
    """The task's alerts, each with the override made on it, or the earlier override that silences it."""
    alerts = [Alert.model_validate(a) for a in task["alerts"]]
    items = [ReconciledItem.model_validate(i) for i in task["items"]]
    own = {
        data.key: data.override_id
        for _, task_id, data in overrides
        if str(task_id) == task["task_id"]  # overrides made on this very task
    }
    earlier = [data for at, task_id, data in overrides if at < created_at and str(task_id) != task["task_id"]]
    out = []
    for index, alert in enumerate(alerts):
        out.append(
            {
                **alert.model_dump(mode="json"),
                "index": index,
                "overridden_by": own.get(alert_key(alert)),
                "suppressed_by": suppressing(alert, items, earlier),
            }
        )
    return out


def _task_view(
    row: asyncpg.Record, overrides: Sequence[tuple[datetime, Any, ActiveOverride]], *, whole: bool = True
) -> dict[str, Any]:
    """A task as tools show it; a summary (`whole=False`) leaves out its lists, alerts and completion."""
    task = json.loads(row["created_event"])["data"]
    alerts = _alerts(task, row["created_at"], overrides)
    summary = {
        "task_id": str(row["task_id"]),
        "patient": f"Patient/{row['patient_id']}",
        "status": row["status"],
        "priority": row["priority"],
        "reason": row["reason"],
        "trigger": row["trigger"],
        "due": _iso(row["due"]),
        "overdue": row["overdue_at"] is not None,
        "owner": row["owner"],
        "service": row["service"],
        "alerts": row["alert_count"],
        "alerts_suppressed": sum(1 for a in alerts if a["suppressed_by"] or a["overridden_by"]),
        "discrepancies": row["discrepancy_count"],
        "created_at": row["created_at"].isoformat(),
        "claimed_at": _iso(row["claimed_at"]),
        "completed_at": _iso(row["completed_at"]),
    }
    if not whole:
        return summary
    completion = json.loads(row["completion"]) if row["completion"] else None
    return {**summary, "task": {**task, "alerts": alerts}, "completion": completion}


async def list_tasks(conn: asyncpg.Connection, query: ListReviewTasks, actor: Actor) -> CommandReply:
    owner = actor.acting_as if query.mine else query.owner
    rows = await conn.fetch(
        LIST_TASKS, query.status, owner, query.reason, query.patient_id, query.overdue, query.offset, query.limit
    )
    overrides = _overrides_by_patient(await conn.fetch(OVERRIDES_OF, sorted({r["patient_id"] for r in rows})))
    # Summaries only: a page is one reply message, and a task whole can take much of one (`GetReviewTask`).
    tasks = [_task_view(r, overrides[r["patient_id"]], whole=False) for r in rows]
    more = len(tasks) == query.limit
    return CommandReply(
        outcome="accepted", message=f"{len(tasks)} tasks" + (" (more on the next page)" if more else ""), data=tasks
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def record_cursor(created_at: datetime, task_id: uuid.UUID) -> str:
    """Where a page of a patient's record ended: its oldest task, exactly (microseconds, as Postgres keeps them),
    in characters a shell takes unquoted. Opaque to callers."""
    return f"{(created_at - _EPOCH) // _MICROSECOND}.{task_id}"


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    micros, _, task_id = cursor.partition(".")
    try:
        return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(task_id)
    except (ValueError, OverflowError):
        return None


async def review_record(conn: asyncpg.Connection, query: GetReviewRecord, actor: Actor) -> CommandReply:
    patient = query.patient_id
    after: tuple[datetime | None, uuid.UUID | None] = (None, None)
    if query.before is not None:
        parsed = _parse_cursor(query.before)
        if parsed is None:
            return CommandReply(
                outcome="invalid", message="before: not a cursor this query gave (`next`)", resource_id=patient
            )
        after = parsed
    found = await conn.fetch(PATIENT_TASKS, patient, *after, query.limit + 1, query.task_id)
    rows, more = found[: query.limit], len(found) > query.limit
    member = await conn.fetchrow(MEMBER, patient)
    if not rows and member is None and query.before is None:
        return CommandReply(outcome="not_found", message="review holds nothing for this patient", resource_id=patient)
    page = [r["task_id"] for r in rows]
    on_page = {str(task_id) for task_id in page}
    # Every override of the patient decides which alerts are silenced; only those made on the page's tasks are listed.
    override_rows = await conn.fetch(OVERRIDES_OF, [patient])
    overrides = _overrides_by_patient(override_rows)[patient]
    recommendations = []
    for r in await conn.fetch(RECOMMENDATIONS_OF, patient, page):
        rec = json.loads(r["recommendation"])
        referral = None
        if r["referral_id"] is not None:
            referral = {
                "referral_id": str(r["referral_id"]),
                "physician_id": r["physician_id"],
                "decision": r["decision"],
                "note": r["answer_note"],
                "answered_at": _iso(r["answered_at"]),
            }
        # The prescriber's own answer is the outcome of a referred recommendation; the pharmacist records the rest.
        outcome = r["decision"] or r["outcome"]
        recommendations.append(
            {
                **rec,
                "task_id": str(r["task_id"]),
                "target": "prescriber" if rec["needs_prescriber"] else "patient",
                "recorded_at": r["recorded_at"].isoformat(),
                "outcome": outcome,
                "outcome_source": ("prescriber" if r["decision"] else "pharmacist") if outcome else None,
                "outcome_note": r["answer_note"] if r["decision"] else r["outcome_note"],
                "referral": referral,
            }
        )
    data = {
        "patient": f"Patient/{patient}",
        "member": (
            {
                "enrolled": member["enrolled"],
                "enrolled_on": _iso(member["enrolled_on"]),
                "disenrolled_on": _iso(member["disenrolled_on"]),
            }
            if member
            else None
        ),
        "tasks": [_task_view(r, overrides) for r in rows],
        "next": record_cursor(rows[-1]["created_at"], rows[-1]["task_id"]) if more else None,
        "recommendations": recommendations,
        "overrides": [
            {**json.loads(r["override"]), "overridden_at": r["overridden_at"].isoformat()}
            for r in override_rows
            if str(r["task_id"]) in on_page
        ],
        "follow_ups": [
            {
                "follow_up_id": str(r["follow_up_id"]),
                "task_id": str(r["task_id"]),
                "due": _iso(r["due"]),
                "reason": r["reason"],
            }
            for r in await conn.fetch(FOLLOW_UPS_OF, patient, page)
        ],
        "action_plans": [
            {
                "task_id": str(r["task_id"]),
                "performed_on": _iso(r["performed_on"]),
                "due": _iso(r["due"]),
                "delivered_on": _iso(r["delivered_on"]),
                "delivery_method": r["delivery_method"],
                "overdue": r["overdue_at"] is not None,
            }
            for r in await conn.fetch(ACTION_PLANS_OF, patient, page)
        ],
        "scheduled": [
            {
                "schedule_id": str(r["schedule_id"]),
                "service": r["service"],
                "trigger": r["trigger"],
                "opens_at": _iso(r["opens_at"]),
                "due": _iso(r["due"]),
            }
            for r in await conn.fetch(SCHEDULED_OF, patient)
        ],
    }
    message = f"{len(rows)} tasks" + (" (older ones on the next page: `before` = `next`)" if more else "")
    return CommandReply(outcome="accepted", message=message, resource_id=patient, data=data)


async def action_plan(conn: asyncpg.Connection, query: GetActionPlan, actor: Actor) -> CommandReply:
    row = await conn.fetchrow(LATEST_CMR, query.patient_id, query.task_id)
    if row is None:
        return CommandReply(
            outcome="not_found", message="no completed CMR for this patient", resource_id=query.patient_id
        )
    completion = json.loads(row["completion"])
    documentation = ReviewDocumentation.model_validate(completion["documentation"])
    follow_ups = await conn.fetch(TASK_FOLLOW_UPS, row["task_id"])
    delivered = await conn.fetchval(ACTION_PLAN, row["task_id"])
    document = ActionPlanDocument(
        patient_id=query.patient_id,
        task_id=row["task_id"],
        pharmacist_id=completion["pharmacist_id"],
        performed_on=documentation.performed_on,
        delivery_method=documentation.delivery_method,
        recipient=documentation.recipient,
        provider_type=documentation.provider_type,
        action_plan=documentation.action_plan,
        medications=documentation.medications,
        allergies=documentation.allergies,
        follow_ups=tuple(PlannedFollowUp(due=f["due"].date(), reason=f["reason"]) for f in follow_ups),
        deliver_by=documentation.performed_on + ACTION_PLAN_WINDOW,
        delivered_on=delivered,
    )
    return CommandReply(outcome="accepted", resource_id=str(row["task_id"]), data=document.model_dump(mode="json"))


async def alert_rule_stats(conn: asyncpg.Connection, query: ListAlertRuleStats, actor: Actor) -> CommandReply:
    rows = await conn.fetch(RULE_STATS, query.offset, query.limit)
    stats = [
        {
            "rule": r["rule"],
            "kind": r["kind"],
            "severity": r["severity"],
            "fired": r["fired"],
            "tasks": r["tasks"],
            "overridden": r["overridden"],
            "override_rate": round(r["overridden"] / r["fired"], 4),
            "problems": r["problems"],
            "recommendations": r["recommendations"],
            "accepted": r["accepted"],
            "acceptance_rate": round(r["accepted"] / r["recommendations"], 4) if r["recommendations"] else None,
        }
        for r in rows
    ]
    return CommandReply(outcome="accepted", message=f"{len(stats)} rules", data=stats)
