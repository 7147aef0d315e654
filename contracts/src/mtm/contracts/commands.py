"""Commands that pharmacists' and physicians' tools send over NATS request/reply, and their replies."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import AwareDatetime, Field

from mtm.contracts.documentation import ReviewDocumentation
from mtm.contracts.envelope import Frozen
from mtm.contracts.events import (
    ActionPlanDeliveryMethod,
    OverrideReason,
    Recommendation,
    RecommendationOutcome,
    ReferralDecision,
    ReviewReason,
    TaskPriority,
)
from mtm.contracts.limits import MAX_FOLLOW_UPS, MAX_RECOMMENDATIONS, FhirId, Note, Remark


class Command(Frozen):
    """A request to change something; who asks is the verified actor of the token sent with it, not the body."""

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Retries reuse the same id.")
    schema_version: Literal[1] = 1


class ClaimReviewTask(Command):
    """A pharmacist takes a task (the pharmacist is the actor)."""

    task_id: uuid.UUID


class FollowUpRequest(Frozen):
    due: AwareDatetime
    reason: Remark


class CompleteReviewTask(Command):
    """The pharmacist who claimed the task documents it (a CMR or TMR with its `documentation`)."""

    task_id: uuid.UUID
    note: Note | None = None
    recommendations: tuple[Recommendation, ...] = Field(default=(), max_length=MAX_RECOMMENDATIONS)
    documentation: ReviewDocumentation | None = None
    follow_ups: tuple[FollowUpRequest, ...] = Field(default=(), max_length=MAX_FOLLOW_UPS)


class ReleaseReviewTask(Command):
    """Its owner (or an admin) puts a claimed task back in the queue."""

    task_id: uuid.UUID
    reason: Note | None = None


class ReassignReviewTask(Command):
    """Its owner (or an admin) hands a task to another pharmacist."""

    task_id: uuid.UUID
    pharmacist_id: FhirId


class OverrideAlert(Command):
    """A pharmacist judges an alert of a task not to need action, with the reason."""

    task_id: uuid.UUID
    alert: int = Field(ge=0, description="Position of the alert in the task (as listed).")
    reason_code: OverrideReason
    reason: Note = Field(min_length=1)


class RecordRecommendationOutcome(Command):
    """What became of a recommendation (the member's answer, or no response from a prescriber)."""

    recommendation_id: uuid.UUID
    outcome: RecommendationOutcome
    note: Note | None = None


class RecordActionPlanDelivery(Command):
    """The CMR's Medication Action Plan and Personal Medication List reached the member."""

    task_id: uuid.UUID
    method: ActionPlanDeliveryMethod
    delivered_on: date


class AnswerReferral(Command):
    """The physician the referral is addressed to answers it."""

    referral_id: uuid.UUID
    decision: ReferralDecision
    note: Note | None = None


class AcknowledgeReferral(Command):
    """The physician the referral is addressed to has read it (a read receipt; answering is separate)."""

    referral_id: uuid.UUID


CommandOutcome = Literal["accepted", "not_found", "conflict", "invalid", "unauthorized", "forbidden", "error"]


class CommandReply(Frozen):
    """Reply to any command: `accepted`, or why not, with the resource's current status.

    `unauthorized`: no valid actor token came with the request (missing, unsigned, expired); `forbidden`: the
    token is valid but its role may not do this. Either way nothing was recorded.
    """

    outcome: CommandOutcome
    message: str = ""
    resource_id: str | None = None
    status: str | None = None
    data: dict | list | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "accepted"


class Query(Frozen):
    schema_version: Literal[1] = 1


MAX_PAGE = 200
"""Rows per page of any list query: each page is one reply message."""


class Page(Query):
    """One page of a list: replies are single messages, so a long list is read page by page."""

    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class ListReviewTasks(Page):
    """Task summaries, most urgent first (priority, then due); one task whole comes with `GetReviewTask`."""

    status: Literal["requested", "in-progress", "completed"] | None = None
    owner: FhirId | None = Field(default=None, description="Only tasks held by this pharmacist.")
    mine: bool = Field(default=False, description="Only tasks held by the pharmacist asking.")
    reason: ReviewReason | None = None
    patient_id: FhirId | None = None
    overdue: bool | None = Field(default=None, description="Only overdue (true) or not overdue (false) tasks.")


MAX_RECORD_PAGE = 50
"""Tasks per page of a patient's review record: each comes whole (its list, alerts, completion)."""


class GetReviewRecord(Query):
    """Everything review holds for one patient, a page of tasks at a time, newest first: each task whole, with the
    recommendations, overrides, follow-ups and action plans of the page's tasks; membership and the reviews
    scheduled on every page. The reply's `next` is the `before` of the next (older) page, none after the last.
    With `task_id`, the page is that one task."""

    patient_id: FhirId
    limit: int = Field(default=20, ge=1, le=MAX_RECORD_PAGE)
    before: str | None = Field(
        default=None,
        max_length=60,
        pattern=r"^[0-9]{1,19}\.[0-9a-fA-F-]{32,36}$",
        description="The `next` of the previous page (opaque): only tasks created before it.",
    )
    task_id: uuid.UUID | None = Field(
        default=None, description="Only this task of the patient, with what belongs to it (a task page's part)."
    )


class GetActionPlan(Query):
    """The Medication Action Plan and Personal Medication List of a patient's CMR (the latest unless `task_id`)."""

    patient_id: FhirId
    task_id: uuid.UUID | None = None


class ListAlertRuleStats(Page):
    """Per drug-check rule: how often it fired, was overridden, led to a problem, and to an accepted change."""

    limit: int = Field(default=100, ge=1, le=MAX_PAGE)


class ListReferrals(Page):
    physician_id: FhirId | None = None
    patient_id: FhirId | None = None
    status: Literal["requested", "accepted", "declined", "modified"] | None = None
    task_id: uuid.UUID | None = Field(default=None, description="Only the referrals of this review task.")
    needs_attention: bool = Field(
        default=False,
        description="Only referrals a pharmacist should follow up: escalated while unanswered, or not delivered.",
    )


class GetReferral(Query):
    """One referral with its follow-through; a physician gets `not_found` for a referral not addressed to them."""

    referral_id: uuid.UUID


WorklistStatus = Literal["open", "requested", "in-progress", "completed"]


class ListWorklist(Page):
    """The pharmacists' worklist: one page of tasks, most urgent first, with the total and overdue counts."""

    status: WorklistStatus = Field(default="open", description="`open`: requested or in progress.")
    priority: TaskPriority | None = None
    owner: FhirId | None = Field(default=None, description="Only tasks claimed by this pharmacist (practitioner id).")
    overdue: bool = Field(default=False, description="Only tasks past their due time.")
    patient_id: FhirId | None = None


class GetReviewTask(Query):
    """One review task whole: both medication lists item by item, discrepancies, alerts, claim and completion.

    A physician sees it only when on the patient's care team (primary care or attending)."""

    task_id: uuid.UUID


class GetMedicationList(Query):
    patient_id: FhirId
    format: Literal["mtm", "fhir"] = "mtm"


class GetMedicationHistory(Query):
    """The patient's reconciled transitions of care, newest first: what changed at each."""

    patient_id: FhirId
    limit: int = Field(default=20, ge=1, le=200)


class ListNotifications(Page):
    """Deliveries of referrals (FHIR Communication), for one patient or all, oldest first."""

    patient_id: FhirId | None = None
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
