"""Everything the review service consumes and answers, in one table."""

from __future__ import annotations

from functools import partial

from mtm.contracts import (
    ClaimReviewTask,
    CompleteReviewTask,
    GetReviewTask,
    ListReviewTasks,
    ListWorklist,
    MedicationsReconciled,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
)
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    GET_REVIEW_TASK,
    LIST_REVIEW_TASKS,
    LIST_WORKLIST,
)
from mtm.platform.service import Command, Query, ServiceHandlers, on_event
from mtm.review import application
from mtm.review.adapters import tasks, worklist
from mtm.review.domain.tasks import TASK_EVENTS
from mtm.review.drug_checks import DrugChecker


def handlers(check: DrugChecker) -> ServiceHandlers:
    return ServiceHandlers(
        projection=tasks.TASKS,
        reactions=(
            on_event(
                MedicationsReconciled,
                partial(application.open_review_task, check=check),
                durable="review-medications-reconciled",
            ),
        ),
        commands=(
            Command(
                CLAIM_REVIEW_TASK,
                ClaimReviewTask,
                roles=("pharmacist",),
                locate=tasks.patient_of_task,
                decide=application.claim_task,
                reads=TASK_EVENTS,
                emits=(ReviewTaskClaimed,),
                not_found="no such review task",
            ),
            Command(
                COMPLETE_REVIEW_TASK,
                CompleteReviewTask,
                roles=("pharmacist",),
                locate=tasks.patient_of_task,
                decide=application.complete_task,
                reads=TASK_EVENTS,
                emits=(ReviewTaskCompleted,),
                not_found="no such review task",
            ),
        ),
        queries=(
            Query(LIST_REVIEW_TASKS, ListReviewTasks, ("pharmacist", "admin"), tasks.list_tasks),
            # The web app's pages: the worklist, and one task whole (physicians of the patient's care team too).
            Query(LIST_WORKLIST, ListWorklist, ("pharmacist", "admin"), worklist.worklist),
            Query(GET_REVIEW_TASK, GetReviewTask, ("pharmacist", "physician", "admin"), worklist.get_task),
        ),
    )
