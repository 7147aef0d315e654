"""Referral decisions: which recommendations need the prescriber, and who may answer a referral."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from mtm.contracts import EventEnvelope, ReferralAcknowledged, ReferralAnswered, ReferralRequested
from mtm.contracts.events import Referral, ReferralEscalation, TaskCompletion

ReferralStatus = Literal["requested", "accepted", "declined", "modified"]
_NAMESPACE = uuid.UUID("0e0a3c55-4b0e-4d7e-9a55-2f3f7a0d6c11")


class NoResponsiblePhysician(ValueError):
    """A recommendation needs a prescriber but the care team names none."""


def derived_id(kind: str, source_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{source_id}")


def referrals_for(completion: TaskCompletion, respond_by: datetime | None = None) -> list[Referral]:
    """One referral per recommendation that needs the prescriber, addressed to the responsible physician."""
    needing = [r for r in completion.recommendations if r.needs_prescriber]
    if not needing:
        return []
    physician = completion.care_team.responsible_physician_id
    if physician is None:
        raise NoResponsiblePhysician(
            "data.care_team: no primary-care or attending physician to refer "
            f"{len(needing)} recommendation(s) of task {completion.task_id} to"
        )
    return [
        Referral(
            # Scoped to the task: a recommendation id reused on another task is another referral, not a resend.
            referral_id=derived_id(f"referral:{completion.task_id}", rec.recommendation_id),
            task_id=completion.task_id,
            physician_id=physician,
            pharmacist_id=completion.pharmacist_id,
            recommendation=rec,
            priority=rec.priority,
            respond_by=respond_by,
        )
        for rec in needing
    ]


@dataclass(frozen=True)
class ReferralState:
    referral_id: uuid.UUID
    physician_id: str
    status: ReferralStatus
    decision: str | None
    acknowledged: bool = False


REFERRAL_EVENTS: tuple[type[EventEnvelope], ...] = (ReferralRequested, ReferralAnswered, ReferralAcknowledged)
"""The events a referral's state is folded from."""


@dataclass(frozen=True)
class ReferralRecord:
    state: ReferralState
    patient_id: str
    correlation_id: uuid.UUID


def fold_referral(events: Iterable[EventEnvelope], referral_id: uuid.UUID) -> ReferralRecord | None:
    """The referral after its events, in log order; None when it was never requested."""
    record: ReferralRecord | None = None
    for event in events:
        if isinstance(event, ReferralRequested) and event.data.referral_id == referral_id:
            state = ReferralState(referral_id, event.data.physician_id, "requested", None)
            record = ReferralRecord(state, event.patient_id, event.correlation_id)
        elif record is not None and isinstance(event, ReferralAnswered) and event.data.referral_id == referral_id:
            answer = event.data.decision
            record = replace(record, state=replace(record.state, status=answer, decision=answer))
        elif record is not None and isinstance(event, ReferralAcknowledged) and event.data.referral_id == referral_id:
            record = replace(record, state=replace(record.state, acknowledged=True))
    return record


@dataclass(frozen=True)
class AnswerDecision:
    outcome: Literal["accepted", "already", "conflict"]
    message: str


def decide_answer(referral: ReferralState, physician_id: str, decision: str) -> AnswerDecision:
    if referral.physician_id != physician_id:
        return AnswerDecision("conflict", f"referral is addressed to physician {referral.physician_id}")
    if referral.status != "requested":
        if referral.decision == decision:
            return AnswerDecision("already", f"referral was already answered: {decision}")
        return AnswerDecision("conflict", f"referral was already answered: {referral.decision}")
    return AnswerDecision("accepted", f"referral {decision}")


def decide_acknowledgement(referral: ReferralState, physician_id: str) -> AnswerDecision:
    """Only the addressed physician acknowledges, once; acknowledging again (or after answering) changes nothing."""
    if referral.physician_id != physician_id:
        return AnswerDecision("conflict", f"referral is addressed to physician {referral.physician_id}")
    if referral.acknowledged:
        return AnswerDecision("already", "referral was already acknowledged")
    return AnswerDecision("accepted", "referral acknowledged")


@dataclass(frozen=True)
class EscalationPolicy:
    """How long a physician has to answer, and how many reminders follow before the referral is left to the
    pharmacist's follow-up."""

    respond_within: timedelta
    max_escalations: int

    def respond_by(self, requested_at: datetime) -> datetime:
        return requested_at + self.respond_within


@dataclass(frozen=True)
class Overdue:
    """An unanswered referral whose deadline passed, as the projection holds it."""

    referral_id: uuid.UUID
    task_id: uuid.UUID
    patient_id: str
    correlation_id: uuid.UUID
    physician_id: str
    pharmacist_id: str
    escalations: int
    escalate_at: datetime


def escalation_of(overdue: Overdue, policy: EscalationPolicy) -> ReferralEscalation:
    """The next escalation; the one after it is due a whole interval later, unless this was the last."""
    n = overdue.escalations + 1
    following = overdue.escalate_at + policy.respond_within if n < policy.max_escalations else None
    return ReferralEscalation(
        referral_id=overdue.referral_id,
        task_id=overdue.task_id,
        physician_id=overdue.physician_id,
        pharmacist_id=overdue.pharmacist_id,
        escalation=n,
        respond_by=overdue.escalate_at,
        next_escalation_at=following,
    )
