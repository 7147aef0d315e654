"""Everything the review service consumes and answers, in one table."""

from __future__ import annotations

from functools import partial

from mtm.contracts import (
    ActionPlanDelivered,
    ActionPlanOverdue,
    AlertOverridden,
    ClaimReviewTask,
    CompleteReviewTask,
    FollowUpScheduled,
    GetActionPlan,
    GetReviewRecord,
    GetReviewTask,
    ListAlertRuleStats,
    ListReviewTasks,
    ListWorklist,
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
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    GET_ACTION_PLAN,
    GET_REVIEW_RECORD,
    GET_REVIEW_TASK,
    LIST_ALERT_RULE_STATS,
    LIST_REVIEW_TASKS,
    LIST_WORKLIST,
    OVERRIDE_ALERT,
    REASSIGN_REVIEW_TASK,
    RECORD_ACTION_PLAN_DELIVERY,
    RECORD_RECOMMENDATION_OUTCOME,
    RELEASE_REVIEW_TASK,
)
from mtm.platform.service import Command, Database, Query, ServiceHandlers, on_event, on_events
from mtm.platform.timers import Timer
from mtm.review import application
from mtm.review.adapters import fills, queries, tasks, worklist
from mtm.review.domain.program import MEMBERSHIP_EVENTS
from mtm.review.domain.tasks import TASK_EVENTS
from mtm.review.drug_checks import DrugChecker

TASK_COMMAND = {"locate": tasks.patient_of_task, "not_found": "no such review task"}


def _nothing(_event: object) -> list:
    """Events review keeps in its tables without causing anything."""
    return []


def handlers(
    check: DrugChecker, database: Database, *, fill_check: DrugChecker | None = None, timer_every_s: float = 5.0
) -> ServiceHandlers:
    records = fills.MemberFillRecords(database)
    return ServiceHandlers(
        projection=tasks.TASKS,
        reactions=(
            # The reconciliation is kept too: a later fill is checked against the list and the patient it holds.
            on_event(
                MedicationsReconciled,
                partial(application.open_review_task, check=check),
                durable="review-medications-reconciled",
                emits=(ReviewTaskCreated,),
                keeps_input=True,
            ),
            # A fill that raises a new high-severity alert for a member opens a targeted review.
            on_event(
                MedicationDispensed,
                partial(application.review_fill, check=fill_check or check, records=records),
                durable="review-fills",
                emits=(ReviewTaskCreated,),
                keeps_input=True,
                prefetch=records.look_up,
            ),
            # Enrolment opens the CMR offer and the quarterly TMRs; adherence newly below 80% opens a TMR.
            on_events(tasks.PROGRAM_EVENTS, _nothing, durable="review-mtm-program", keeps_input=True),
            # The prescriber's answers are the outcomes of the recommendations referred to them.
            on_events(tasks.REFERRAL_EVENTS, _nothing, durable="review-referrals", keeps_input=True),
        ),
        commands=(
            Command(
                CLAIM_REVIEW_TASK,
                ClaimReviewTask,
                roles=("pharmacist",),
                decide=application.claim_task,
                reads=TASK_EVENTS,
                emits=(ReviewTaskClaimed,),
                **TASK_COMMAND,
            ),
            Command(
                RELEASE_REVIEW_TASK,
                ReleaseReviewTask,
                roles=("pharmacist", "admin"),
                decide=application.release_task,
                reads=TASK_EVENTS,
                emits=(ReviewTaskReleased,),
                **TASK_COMMAND,
            ),
            Command(
                REASSIGN_REVIEW_TASK,
                ReassignReviewTask,
                roles=("pharmacist", "admin"),
                decide=application.reassign_task,
                reads=TASK_EVENTS,
                emits=(ReviewTaskReassigned,),
                **TASK_COMMAND,
            ),
            Command(
                COMPLETE_REVIEW_TASK,
                CompleteReviewTask,
                roles=("pharmacist",),
                decide=application.complete_task,
                reads=(*TASK_EVENTS, *MEMBERSHIP_EVENTS, MedicationsReconciled),
                emits=(ReviewTaskCompleted, FollowUpScheduled),
                **TASK_COMMAND,
            ),
            Command(
                OVERRIDE_ALERT,
                OverrideAlert,
                roles=("pharmacist",),
                decide=application.override_alert,
                reads=(*TASK_EVENTS, AlertOverridden),
                emits=(AlertOverridden,),
                **TASK_COMMAND,
            ),
            Command(
                RECORD_RECOMMENDATION_OUTCOME,
                RecordRecommendationOutcome,
                roles=("pharmacist",),
                locate=tasks.patient_of_recommendation,
                decide=application.record_recommendation_outcome,
                reads=(ReviewTaskCompleted, RecommendationOutcomeRecorded),
                emits=(RecommendationOutcomeRecorded,),
                not_found="no such recommendation",
            ),
            Command(
                RECORD_ACTION_PLAN_DELIVERY,
                RecordActionPlanDelivery,
                roles=("pharmacist",),
                decide=application.record_action_plan_delivery,
                reads=(*TASK_EVENTS, ActionPlanDelivered),
                emits=(ActionPlanDelivered,),
                **TASK_COMMAND,
            ),
        ),
        queries=(
            Query(LIST_REVIEW_TASKS, ListReviewTasks, ("pharmacist", "admin"), queries.list_tasks),
            Query(GET_REVIEW_RECORD, GetReviewRecord, ("pharmacist", "admin"), queries.review_record),
            Query(GET_ACTION_PLAN, GetActionPlan, ("pharmacist", "physician", "admin"), queries.action_plan),
            Query(LIST_ALERT_RULE_STATS, ListAlertRuleStats, ("pharmacist", "admin"), queries.alert_rule_stats),
            # The web app's pages: the worklist, and one task whole (physicians of the patient's care team too).
            Query(LIST_WORKLIST, ListWorklist, ("pharmacist", "admin"), worklist.worklist),
            Query(GET_REVIEW_TASK, GetReviewTask, ("pharmacist", "physician", "admin"), worklist.get_task),
        ),
        timers=(
            Timer(
                "review-task-deadlines",
                timer_every_s,
                tasks.overdue_tasks,
                application.task_overdue,
                emits=(ReviewTaskOverdue,),
            ),
            Timer(
                "review-schedule",
                timer_every_s,
                tasks.due_reviews,
                application.scheduled_review,
                emits=(ReviewTaskCreated, ScheduledReviewSkipped),
            ),
            Timer(
                "action-plan-deadlines",
                timer_every_s,
                tasks.overdue_action_plans,
                application.action_plan_overdue,
                emits=(ActionPlanOverdue,),
            ),
        ),
    )
