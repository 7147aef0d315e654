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
)


class Command(Frozen):
    """A request to change something; who asks is the verified actor of the token sent with it, not the body."""

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Retries reuse the same id.")
    schema_version: Literal[1] = 1


class ClaimReviewTask(Command):
    """A pharmacist takes a task (the pharmacist is the actor)."""

    task_id: uuid.UUID


class FollowUpRequest(Frozen):
    due: AwareDatetime
    reason: str = Field(min_length=1)


class CompleteReviewTask(Command):
    """The pharmacist who claimed the task documents it (a CMR or TMR with its `documentation`)."""

    task_id: uuid.UUID
    note: str | None = None
    recommendations: tuple[Recommendation, ...] = ()
    documentation: ReviewDocumentation | None = None
    follow_ups: tuple[FollowUpRequest, ...] = ()


class ReleaseReviewTask(Command):
    """Its owner (or an admin) puts a claimed task back in the queue."""

    task_id: uuid.UUID
    reason: str | None = None


class ReassignReviewTask(Command):
    """Its owner (or an admin) hands a task to another pharmacist."""

    task_id: uuid.UUID
    pharmacist_id: str = Field(min_length=1, max_length=128)


class OverrideAlert(Command):
    """A pharmacist judges an alert of a task not to need action, with the reason."""

    task_id: uuid.UUID
    alert: int = Field(ge=0, description="Position of the alert in the task (as listed).")
    reason_code: OverrideReason
    reason: str = Field(min_length=1, max_length=2000)


class RecordRecommendationOutcome(Command):
    """What became of a recommendation (the member's answer, or no response from a prescriber)."""

    recommendation_id: uuid.UUID
    outcome: RecommendationOutcome
    note: str | None = None


class RecordActionPlanDelivery(Command):
    """The CMR's Medication Action Plan and Personal Medication List reached the member."""

    task_id: uuid.UUID
    method: ActionPlanDeliveryMethod
    delivered_on: date


class AnswerReferral(Command):
    """The physician the referral is addressed to answers it."""

    referral_id: uuid.UUID
    decision: ReferralDecision
    note: str | None = None


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


PATIENT_ID = r"^[A-Za-z0-9\-.]{1,64}$"


class ListReviewTasks(Query):
    """The worklist: most urgent first (priority, then due time), a page at a time (`offset`, `limit`)."""

    status: Literal["requested", "in-progress", "completed"] | None = None
    owner: str | None = Field(default=None, description="Only tasks held by this pharmacist.")
    mine: bool = Field(default=False, description="Only tasks held by the pharmacist asking.")
    reason: ReviewReason | None = None
    patient_id: str | None = Field(default=None, pattern=PATIENT_ID)
    overdue: bool | None = Field(default=None, description="Only overdue (true) or not overdue (false) tasks.")
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=50, ge=1, le=1000)


class GetReviewRecord(Query):
    """Everything review holds for one patient: tasks, alerts and overrides, documentation, outcomes, follow-ups."""

    patient_id: str = Field(pattern=PATIENT_ID)


class GetActionPlan(Query):
    """The Medication Action Plan and Personal Medication List of a patient's CMR (the latest unless `task_id`)."""

    patient_id: str = Field(pattern=PATIENT_ID)
    task_id: uuid.UUID | None = None


class ListAlertRuleStats(Query):
    """Per drug-check rule: how often it fired, was overridden, led to a problem, and to an accepted change."""

    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)


class ListReferrals(Query):
    physician_id: str | None = None
    patient_id: str | None = Field(default=None, pattern=PATIENT_ID)
    status: Literal["requested", "accepted", "declined", "modified"] | None = None
    limit: int = Field(default=50, ge=1, le=1000)


class GetMedicationList(Query):
    patient_id: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    format: Literal["mtm", "fhir"] = "mtm"


class ListNotifications(Query):
    """Deliveries of referrals (FHIR Communication), for one patient or all, oldest first."""

    patient_id: str | None = Field(default=None, pattern=PATIENT_ID)
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=100, ge=1, le=1000)
