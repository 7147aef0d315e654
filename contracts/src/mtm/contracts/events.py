"""Events of the patient medication event log, one class per fact, version 1."""

from __future__ import annotations

import uuid
from datetime import date
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, model_validator

from mtm.contracts.clinical import (
    Allergy,
    CareTeam,
    Condition,
    MedicationEntry,
    Observation,
    PatientDemographics,
)
from mtm.contracts.documentation import MtmService, ReviewDocumentation, Severity
from mtm.contracts.envelope import EventEnvelope, Frozen
from mtm.contracts.identity import Actor
from mtm.contracts.limits import (
    MAX_ALLERGIES,
    MAX_CONDITIONS,
    MAX_INGREDIENTS,
    MAX_MEDICATIONS,
    MAX_OBSERVATIONS,
    MAX_RECOMMENDATION,
    MAX_RECOMMENDATIONS,
    FhirId,
    Ingredient,
    Note,
)
from mtm.contracts.program import PROGRAM_EVENT_CLASSES
from mtm.contracts.registry import EventRegistry

ItemStatus = Literal["continued", "changed", "new", "stopped"]
ChangeKind = Literal["dose", "frequency", "route", "formulation"]
DiscrepancyType = Literal["omission", "dose", "frequency", "route", "formulation", "duplication", "commission"]
AlertKind = Literal[
    "interaction",
    "duplication",
    "dose",
    "renal",
    "condition",
    "allergy",
    "geriatric",
    "pharmacogenomic",
    "unresolved",
]
Tier = Literal["interruptive", "passive"]
TaskPriority = Literal["routine", "urgent", "asap", "stat"]
ReviewReason = Literal["post-discharge-review", "comprehensive-medication-review", "targeted-medication-review"]
ReviewTrigger = Literal["discharge", "enrolment", "annual", "quarterly", "adherence", "follow-up", "high-alert"]
"""What opened a review: a discharge, an enrolment (the CMR offer), the yearly CMR, the quarterly TMR, an
adherence measure below its threshold, a follow-up that came due, or a pharmacy fill that raised a new
high-severity alert."""
RecommendationOutcome = Literal["accepted", "declined", "modified", "no-response"]
OverrideReason = Literal[
    "benefit-outweighs-risk", "tolerated-previously", "will-monitor", "not-clinically-relevant", "other"
]
ActionPlanDeliveryMethod = Literal["in-person", "mail", "electronic", "fax"]
RecommendationAction = Literal[
    "start", "stop", "change-dose", "change-frequency", "substitute", "monitor", "educate", "other"
]
ReferralDecision = Literal["accepted", "declined", "modified"]
NotificationChannel = Literal["webhook", "nats", "email"]
NotificationPurpose = Literal["referral", "reminder"]


def _event_type(name: str) -> str:
    return f"mtm.{name}.v1"


# --- transition of care ---------------------------------------------------------------------------------------


class TransitionOfCare(Frozen):
    """What the discharge system knows at discharge: both medication lists and the clinical context."""

    patient: PatientDemographics
    encounter_id: str | None = Field(default=None, max_length=128)
    admitted_at: AwareDatetime | None = None
    discharged_at: AwareDatetime | None = None
    facility: str | None = Field(default=None, max_length=256)
    care_team: CareTeam = CareTeam()
    home_medications: tuple[MedicationEntry, ...] = Field(default=(), max_length=MAX_MEDICATIONS)
    discharge_medications: tuple[MedicationEntry, ...] = Field(default=(), max_length=MAX_MEDICATIONS)
    conditions: tuple[Condition, ...] = Field(default=(), max_length=MAX_CONDITIONS)
    allergies: tuple[Allergy, ...] = Field(default=(), max_length=MAX_ALLERGIES)
    observations: tuple[Observation, ...] = Field(default=(), max_length=MAX_OBSERVATIONS)
    source_format: Literal["mtm", "fhir-r4"] = "mtm"


class _PatientMatchesSubject(EventEnvelope):
    @model_validator(mode="after")
    def _patient_matches_subject(self) -> _PatientMatchesSubject:
        patient = getattr(self.data, "patient", None)
        if patient is not None and patient.patient_id != self.patient_id:
            raise ValueError(f"data.patient.patient_id {patient.patient_id!r} does not match subject {self.subject!r}")
        return self


class TransitionOfCareRecorded(_PatientMatchesSubject):
    """A hospital discharged the patient; both medication lists as the discharge system recorded them."""

    EVENT_NAME: ClassVar[str] = "transition_of_care_recorded"
    type: Literal["mtm.transition_of_care_recorded.v1"] = _event_type("transition_of_care_recorded")
    data: TransitionOfCare


# --- reconciliation -------------------------------------------------------------------------------------------


class IngredientDose(Frozen):
    """Amount of one ingredient per administration and per day, in a canonical unit (mg, mcg, unit, mL)."""

    ingredient: str
    amount: float | None = None
    unit: str | None = None
    daily_amount: float | None = None


class ReconciledItem(Frozen):
    """One medication after matching home and discharge lists by ingredient set."""

    ingredients: tuple[str, ...] = Field(description="Lowercase generic ingredient names; empty when unresolved.")
    status: ItemStatus
    changes: tuple[ChangeKind, ...] = ()
    documented: bool = False
    home: MedicationEntry | None = None
    discharge: MedicationEntry | None = None
    resolved: bool = True
    formulation: str | None = Field(default=None, description="E.g. `extended-release`, `metoprolol succinate`.")
    route: str | None = Field(default=None, description="Normalized route of the current entry, e.g. `oral`.")
    frequency_per_day: float | None = None
    ingredient_doses: tuple[IngredientDose, ...] = ()

    @property
    def current(self) -> MedicationEntry | None:
        return self.discharge or self.home


class Discrepancy(Frozen):
    """An undocumented difference between home and discharge lists (FHIR DetectedIssue-shaped)."""

    type: DiscrepancyType
    ingredients: tuple[str, ...]
    documented: Literal[False] = False
    home: MedicationEntry | None = None
    discharge: MedicationEntry | None = None
    message: str


class Reconciliation(Frozen):
    transition_event_id: uuid.UUID
    patient: PatientDemographics
    encounter_id: str | None = None
    discharged_at: AwareDatetime | None = None
    care_team: CareTeam = CareTeam()
    items: tuple[ReconciledItem, ...] = ()
    discrepancies: tuple[Discrepancy, ...] = ()
    conditions: tuple[Condition, ...] = ()
    allergies: tuple[Allergy, ...] = ()
    observations: tuple[Observation, ...] = ()


class MedicationsReconciled(_PatientMatchesSubject):
    """Home and discharge lists matched; the current list with every change and every discrepancy."""

    EVENT_NAME: ClassVar[str] = "medications_reconciled"
    type: Literal["mtm.medications_reconciled.v1"] = _event_type("medications_reconciled")
    data: Reconciliation


# --- review ---------------------------------------------------------------------------------------------------


class Alert(Frozen):
    """A drug-utilization finding (FHIR DetectedIssue-shaped)."""

    kind: AlertKind
    severity: Severity
    tier: Tier
    ingredients: tuple[str, ...]
    message: str
    source: str = Field(description="Where the rule comes from: list, guideline, label or paper.")
    rule_id: str | None = None


class ReviewTask(Frozen):
    """A pharmacist review (FHIR Task) opened from a reconciliation."""

    task_id: uuid.UUID
    reason: ReviewReason = "post-discharge-review"
    priority: TaskPriority
    focus_event_id: uuid.UUID = Field(
        description="What is under review: the MedicationsReconciled event, or the event that opened the review."
    )
    encounter_id: str | None = None
    care_team: CareTeam = CareTeam()
    items: tuple[ReconciledItem, ...] = ()
    discrepancies: tuple[Discrepancy, ...] = ()
    alerts: tuple[Alert, ...] = ()
    due: AwareDatetime | None = None
    trigger: ReviewTrigger | None = Field(default=None, description="Why it opened; a discharge when absent.")
    schedule_id: uuid.UUID | None = Field(default=None, description="The scheduled review it opened, if any.")


class ReviewTaskCreated(EventEnvelope):
    """A review task is open for pharmacists to claim."""

    EVENT_NAME: ClassVar[str] = "review_task_created"
    type: Literal["mtm.review_task_created.v1"] = _event_type("review_task_created")
    data: ReviewTask


class TaskClaim(Frozen):
    task_id: uuid.UUID
    pharmacist_id: str = Field(min_length=1, max_length=128)
    actor: Actor | None = Field(default=None, description="Who claimed it, as their token said (the audit trail).")


class ReviewTaskClaimed(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "review_task_claimed"
    type: Literal["mtm.review_task_claimed.v1"] = _event_type("review_task_claimed")
    data: TaskClaim


class Recommendation(Frozen):
    """A pharmacist's recommendation; those that need the prescriber become referrals."""

    recommendation_id: uuid.UUID
    text: str = Field(min_length=1, max_length=MAX_RECOMMENDATION)
    action: RecommendationAction = "other"
    ingredients: tuple[Ingredient, ...] = Field(default=(), max_length=MAX_INGREDIENTS)
    needs_prescriber: bool = False
    priority: TaskPriority = "routine"
    problem_id: uuid.UUID | None = Field(default=None, description="The drug therapy problem it addresses.")

    @property
    def target(self) -> Literal["patient", "prescriber"]:
        return "prescriber" if self.needs_prescriber else "patient"


class TaskCompletion(Frozen):
    task_id: uuid.UUID
    pharmacist_id: str = Field(min_length=1, max_length=128)
    note: Note | None = None
    recommendations: tuple[Recommendation, ...] = Field(default=(), max_length=MAX_RECOMMENDATIONS)
    care_team: CareTeam = CareTeam()
    actor: Actor | None = Field(default=None, description="Who completed it, as their token said.")
    service: MtmService | None = Field(
        default=None, description="The CMS MTM service it counts as (a review of an enrolled member)."
    )
    documentation: ReviewDocumentation | None = None


class ReviewTaskCompleted(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "review_task_completed"
    type: Literal["mtm.review_task_completed.v1"] = _event_type("review_task_completed")
    data: TaskCompletion


class TaskRelease(Frozen):
    task_id: uuid.UUID
    pharmacist_id: str = Field(min_length=1, description="Who held the task until now.")
    reason: str | None = None
    actor: Actor | None = Field(default=None, description="Who released it: its owner or an admin.")


class ReviewTaskReleased(EventEnvelope):
    """A claimed task is back in the queue for any pharmacist to claim."""

    EVENT_NAME: ClassVar[str] = "review_task_released"
    type: Literal["mtm.review_task_released.v1"] = _event_type("review_task_released")
    data: TaskRelease


class TaskReassignment(Frozen):
    task_id: uuid.UUID
    from_pharmacist_id: str | None = None
    to_pharmacist_id: str = Field(min_length=1)
    actor: Actor | None = Field(default=None, description="Who reassigned it: its owner or an admin.")


class ReviewTaskReassigned(EventEnvelope):
    """A task now belongs to another pharmacist (in progress, as if they had claimed it)."""

    EVENT_NAME: ClassVar[str] = "review_task_reassigned"
    type: Literal["mtm.review_task_reassigned.v1"] = _event_type("review_task_reassigned")
    data: TaskReassignment


class TaskOverdue(Frozen):
    task_id: uuid.UUID
    due: AwareDatetime
    priority: TaskPriority = Field(description="The priority from now on (one step up, `stat` stays `stat`).")
    previous_priority: TaskPriority


class ReviewTaskOverdue(EventEnvelope):
    """A review passed its due time unfinished; its priority is escalated (recorded once per deadline)."""

    EVENT_NAME: ClassVar[str] = "review_task_overdue"
    type: Literal["mtm.review_task_overdue.v1"] = _event_type("review_task_overdue")
    data: TaskOverdue


class ScheduledReviewSkip(Frozen):
    schedule_id: uuid.UUID
    trigger: ReviewTrigger
    reason: Literal["not-enrolled", "open-review", "already-reviewed"]
    covered_by_task_id: uuid.UUID | None = Field(default=None, description="The open review that covers it.")


class ScheduledReviewSkipped(EventEnvelope):
    """A scheduled or triggered review came due but opened no task, and why."""

    EVENT_NAME: ClassVar[str] = "scheduled_review_skipped"
    type: Literal["mtm.scheduled_review_skipped.v1"] = _event_type("scheduled_review_skipped")
    data: ScheduledReviewSkip


class FollowUp(Frozen):
    follow_up_id: uuid.UUID
    task_id: uuid.UUID = Field(description="The review it follows up.")
    due: AwareDatetime
    reason: str = Field(min_length=1)
    actor: Actor | None = None


class FollowUpScheduled(EventEnvelope):
    """The pharmacist will follow up; a targeted review opens when it comes due."""

    EVENT_NAME: ClassVar[str] = "follow_up_scheduled"
    type: Literal["mtm.follow_up_scheduled.v1"] = _event_type("follow_up_scheduled")
    data: FollowUp


class AlertOverride(Frozen):
    override_id: uuid.UUID
    task_id: uuid.UUID
    alert: int = Field(ge=0, description="Position of the alert in the task.")
    rule_id: str | None = None
    kind: AlertKind
    severity: Severity
    ingredients: tuple[str, ...]
    reason_code: OverrideReason
    reason: str = Field(min_length=1)
    regimen: tuple[str, ...] = Field(
        default=(), description="The alert's drugs as taken when overridden (ingredient, dose, route)."
    )
    actor: Actor | None = None


class AlertOverridden(EventEnvelope):
    """A pharmacist judged an alert not to need action; the same alert stays quiet until something relevant changes."""

    EVENT_NAME: ClassVar[str] = "alert_overridden"
    type: Literal["mtm.alert_overridden.v1"] = _event_type("alert_overridden")
    data: AlertOverride


class RecommendationResult(Frozen):
    recommendation_id: uuid.UUID
    task_id: uuid.UUID
    outcome: RecommendationOutcome
    note: str | None = None
    actor: Actor | None = None


class RecommendationOutcomeRecorded(EventEnvelope):
    """What became of a recommendation, as the pharmacist learnt it (a prescriber's own answer is ReferralAnswered)."""

    EVENT_NAME: ClassVar[str] = "recommendation_outcome_recorded"
    type: Literal["mtm.recommendation_outcome_recorded.v1"] = _event_type("recommendation_outcome_recorded")
    data: RecommendationResult


class ActionPlanDelivery(Frozen):
    task_id: uuid.UUID = Field(description="The CMR whose action plan and medication list went out.")
    method: ActionPlanDeliveryMethod
    delivered_on: date
    actor: Actor | None = None


class ActionPlanDelivered(EventEnvelope):
    """The member received the CMR's Medication Action Plan and Personal Medication List."""

    EVENT_NAME: ClassVar[str] = "action_plan_delivered"
    type: Literal["mtm.action_plan_delivered.v1"] = _event_type("action_plan_delivered")
    data: ActionPlanDelivery


class ActionPlanDue(Frozen):
    task_id: uuid.UUID
    due: AwareDatetime = Field(description="14 days after the CMR (CMS: the written summary within 14 days).")


class ActionPlanOverdue(EventEnvelope):
    """A CMR's written summary was not delivered within its deadline (recorded once)."""

    EVENT_NAME: ClassVar[str] = "action_plan_overdue"
    type: Literal["mtm.action_plan_overdue.v1"] = _event_type("action_plan_overdue")
    data: ActionPlanDue


# --- referral -------------------------------------------------------------------------------------------------


class Referral(Frozen):
    """A request to the prescriber (FHIR ServiceRequest) carrying one recommendation."""

    referral_id: uuid.UUID
    task_id: uuid.UUID
    physician_id: FhirId
    pharmacist_id: str = Field(min_length=1, max_length=128)
    recommendation: Recommendation
    priority: TaskPriority = "routine"
    respond_by: AwareDatetime | None = Field(
        default=None, description="When an unanswered referral escalates (a reminder, and a notice to the pharmacist)."
    )


class ReferralRequested(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "referral_requested"
    type: Literal["mtm.referral_requested.v1"] = _event_type("referral_requested")
    data: Referral


class ReferralAnswer(Frozen):
    referral_id: uuid.UUID
    physician_id: str = Field(min_length=1, max_length=128)
    decision: ReferralDecision
    note: Note | None = None
    actor: Actor | None = Field(default=None, description="Who answered, as their token said.")


class ReferralAnswered(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "referral_answered"
    type: Literal["mtm.referral_answered.v1"] = _event_type("referral_answered")
    data: ReferralAnswer


class ReferralAcknowledgement(Frozen):
    """The physician opened the referral and says so (a read receipt); the answer may come later."""

    referral_id: uuid.UUID
    physician_id: str = Field(min_length=1)
    actor: Actor | None = Field(default=None, description="Who acknowledged it, as their token said.")


class ReferralAcknowledged(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "referral_acknowledged"
    type: Literal["mtm.referral_acknowledged.v1"] = _event_type("referral_acknowledged")
    data: ReferralAcknowledgement


class ReferralEscalation(Frozen):
    """A referral still unanswered at its deadline: the physician is reminded and the pharmacist told."""

    referral_id: uuid.UUID
    task_id: uuid.UUID
    physician_id: str = Field(min_length=1)
    pharmacist_id: str = Field(min_length=1)
    escalation: int = Field(ge=1, description="1 for the first reminder, 2 for the second, ...")
    respond_by: AwareDatetime = Field(description="The deadline that passed.")
    next_escalation_at: AwareDatetime | None = Field(
        default=None, description="When it escalates again if still unanswered; none after the last reminder."
    )


class ReferralEscalated(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "referral_escalated"
    type: Literal["mtm.referral_escalated.v1"] = _event_type("referral_escalated")
    data: ReferralEscalation


# --- notify ---------------------------------------------------------------------------------------------------


class NotificationRequest(Frozen):
    """A referral to deliver to its physician over one channel (FHIR CommunicationRequest)."""

    notification_id: uuid.UUID
    referral_id: uuid.UUID
    recipient_id: str = Field(min_length=1)
    channel: NotificationChannel
    purpose: NotificationPurpose = Field(
        default="referral", description="The referral itself, or a reminder that it is still unanswered."
    )
    escalation: int = Field(default=0, ge=0, description="Which escalation a reminder is for (0: the referral).")


class NotificationRequested(EventEnvelope):
    """notify will deliver a referral over this channel, retrying until delivered or failed."""

    EVENT_NAME: ClassVar[str] = "notification_requested"
    type: Literal["mtm.notification_requested.v1"] = _event_type("notification_requested")
    data: NotificationRequest


class NotificationAttempt(Frozen):
    """One delivery attempt that did not succeed but will be retried."""

    notification_id: uuid.UUID
    referral_id: uuid.UUID
    recipient_id: str = Field(min_length=1)
    channel: NotificationChannel
    attempt: int = Field(ge=1)
    started_at: AwareDatetime
    status_code: int | None = None
    detail: str = Field(description="What the channel answered, e.g. `HTTP 503` or `ConnectError`; never PHI.")
    next_attempt_at: AwareDatetime


class NotificationRetryScheduled(EventEnvelope):
    """An attempt failed for a reason worth retrying; the next attempt is due at `next_attempt_at`."""

    EVENT_NAME: ClassVar[str] = "notification_retry_scheduled"
    type: Literal["mtm.notification_retry_scheduled.v1"] = _event_type("notification_retry_scheduled")
    data: NotificationAttempt


class NotificationOutcome(Frozen):
    """A delivery (FHIR Communication) of a referral to its physician over one channel, and its last attempt."""

    notification_id: uuid.UUID
    referral_id: uuid.UUID
    recipient_id: str = Field(min_length=1)
    channel: NotificationChannel
    attempts: int = Field(ge=1)
    reason: str | None = Field(default=None, description="Why delivery failed; set on NotificationFailed.")
    started_at: AwareDatetime | None = Field(default=None, description="When the last attempt started.")
    status_code: int | None = None
    detail: str | None = Field(default=None, description="What the channel answered on the last attempt.")


class NotificationDelivered(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "notification_delivered"
    type: Literal["mtm.notification_delivered.v1"] = _event_type("notification_delivered")
    data: NotificationOutcome


class NotificationFailed(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "notification_failed"
    type: Literal["mtm.notification_failed.v1"] = _event_type("notification_failed")
    data: NotificationOutcome


# --- erasure -------------------------------------------------------------------------------------------------


class Erasure(Frozen):
    """Everything mtm held about a patient is to be forgotten: their key is destroyed, their rows deleted."""

    patient_id: FhirId
    reason: str = Field(min_length=1, max_length=200, description="E.g. `request of the patient`, `retention`.")
    actor: Actor | None = Field(default=None, description="Who erased, as their token said.")


class PatientErased(EventEnvelope):
    """The patient's key is destroyed: their earlier events can no longer be read, and every service forgets them.

    Written in the clear (it must outlive the key) and carrying no PHI beyond the pseudonymous patient id.
    """

    EVENT_NAME: ClassVar[str] = "patient_erased"
    SEALED: ClassVar[bool] = False
    type: Literal["mtm.patient_erased.v1"] = _event_type("patient_erased")
    data: Erasure


EVENT_CLASSES: tuple[type[EventEnvelope], ...] = (
    TransitionOfCareRecorded,
    MedicationsReconciled,
    ReviewTaskCreated,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskReleased,
    ReviewTaskReassigned,
    ReviewTaskOverdue,
    ScheduledReviewSkipped,
    FollowUpScheduled,
    AlertOverridden,
    RecommendationOutcomeRecorded,
    ActionPlanDelivered,
    ActionPlanOverdue,
    ReferralRequested,
    ReferralAnswered,
    ReferralAcknowledged,
    ReferralEscalated,
    NotificationRequested,
    NotificationRetryScheduled,
    NotificationDelivered,
    NotificationFailed,
    PatientErased,
    *PROGRAM_EVENT_CLASSES,
)
EVENT_TYPES: dict[str, type[EventEnvelope]] = {cls.model_fields["type"].default: cls for cls in EVENT_CLASSES}
EVENTS = EventRegistry(EVENT_CLASSES)
"""The registry every service reads the log with: current models and upcasters of every event."""


def parse_event(raw: bytes | str) -> EventEnvelope:
    """Parse any event by its `type`, upcast to the current version; raises ValidationError naming the field."""
    return EVENTS.parse_any(raw)
