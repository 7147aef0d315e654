"""Commands that pharmacists' and physicians' tools send over NATS request/reply, and their replies."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from mtm.contracts.envelope import Frozen
from mtm.contracts.events import Recommendation, ReferralDecision, TaskPriority
from mtm.contracts.limits import MAX_RECOMMENDATIONS, FhirId, Note


class Command(Frozen):
    """A request to change something; who asks is the verified actor of the token sent with it, not the body."""

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Retries reuse the same id.")
    schema_version: Literal[1] = 1


class ClaimReviewTask(Command):
    """A pharmacist takes a task (the pharmacist is the actor)."""

    task_id: uuid.UUID


class CompleteReviewTask(Command):
    """The pharmacist who claimed the task documents it."""

    task_id: uuid.UUID
    note: Note | None = None
    recommendations: tuple[Recommendation, ...] = Field(default=(), max_length=MAX_RECOMMENDATIONS)


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
    """Task summaries, most urgent first; one task's whole content (lists, alerts) comes with `GetReviewTask`."""

    status: Literal["requested", "in-progress", "completed"] | None = None


class ListReferrals(Page):
    physician_id: FhirId | None = None
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
    owner: str | None = Field(default=None, description="Only tasks claimed by this pharmacist (practitioner id).")
    overdue: bool = Field(default=False, description="Only tasks past their due time.")
    patient_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9\-.]{1,64}$")


class GetReviewTask(Query):
    """One review task whole: both medication lists item by item, discrepancies, alerts, claim and completion.

    A physician sees it only when on the patient's care team (primary care or attending)."""

    task_id: uuid.UUID


class GetMedicationList(Query):
    patient_id: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    format: Literal["mtm", "fhir"] = "mtm"


class GetMedicationHistory(Query):
    """The patient's reconciled transitions of care, newest first: what changed at each."""

    patient_id: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    limit: int = Field(default=20, ge=1, le=200)
