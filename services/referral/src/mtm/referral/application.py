"""Referral's use cases: turn a completed review into referrals, record the physician's read receipt and answer,
escalate referrals left unanswered."""

from __future__ import annotations

from datetime import datetime

from mtm.contracts import (
    AcknowledgeReferral,
    AnswerReferral,
    CommandReply,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    ReferralRequested,
    ReviewTaskCompleted,
)
from mtm.contracts.events import ReferralAcknowledgement, ReferralAnswer
from mtm.contracts.identity import Actor
from mtm.platform.decisions import Decision, PatientHistory, decided
from mtm.referral.domain.referrals import (
    REFERRAL_EVENTS,
    EscalationPolicy,
    Overdue,
    decide_acknowledgement,
    decide_answer,
    derived_id,
    escalation_of,
    fold_referral,
    referrals_for,
)

SOURCE = "mtm/referral"


def request_referrals(event: ReviewTaskCompleted, *, policy: EscalationPolicy) -> list[ReferralRequested]:
    """One referral per recommendation that needs the prescriber, to be answered by the policy's deadline; raises
    when the care team names no physician."""
    return [
        event.caused(
            ReferralRequested,
            source=SOURCE,
            data=referral,
            event_id=derived_id("referral-requested", referral.referral_id),
        )
        for referral in referrals_for(event.data, policy.respond_by(event.time))
    ]


def answer_referral(history: PatientHistory, command: AnswerReferral, actor: Actor, now: datetime) -> Decision:
    """Only the addressed physician answers, once; the answer is appended only if the referral did not move."""
    record = fold_referral(history.of(*REFERRAL_EVENTS), command.referral_id)
    referral_id = str(command.referral_id)
    if record is None:
        return Decision.refuse("not_found", "no such referral", resource_id=referral_id)
    decision = decide_answer(record.state, actor.acting_as, command.decision)
    if decision.outcome == "conflict":
        return Decision.refuse("conflict", decision.message, resource_id=referral_id, status=record.state.status)
    reply = CommandReply(outcome="accepted", message=decision.message, resource_id=referral_id, status=command.decision)
    if decision.outcome == "already":
        return Decision(reply)
    answer = ReferralAnswer(
        referral_id=command.referral_id,
        physician_id=actor.acting_as,
        decision=command.decision,
        note=command.note,
        actor=actor,
    )
    event_id = derived_id("referral-answered", command.referral_id)
    answered = decided(ReferralAnswered, command, record, source=SOURCE, data=answer, event_id=event_id, at=now)
    return Decision(reply, (answered,))


def acknowledge_referral(
    history: PatientHistory, command: AcknowledgeReferral, actor: Actor, now: datetime
) -> Decision:
    """The addressed physician's read receipt, recorded once."""
    record = fold_referral(history.of(*REFERRAL_EVENTS), command.referral_id)
    referral_id = str(command.referral_id)
    if record is None:
        return Decision.refuse("not_found", "no such referral", resource_id=referral_id)
    decision = decide_acknowledgement(record.state, actor.acting_as)
    if decision.outcome == "conflict":
        return Decision.refuse("conflict", decision.message, resource_id=referral_id, status=record.state.status)
    reply = CommandReply(
        outcome="accepted", message=decision.message, resource_id=referral_id, status=record.state.status
    )
    if decision.outcome == "already":
        return Decision(reply)
    receipt = ReferralAcknowledgement(referral_id=command.referral_id, physician_id=actor.acting_as, actor=actor)
    event_id = derived_id("referral-acknowledged", command.referral_id)
    acknowledged = decided(
        ReferralAcknowledged, command, record, source=SOURCE, data=receipt, event_id=event_id, at=now
    )
    return Decision(reply, (acknowledged,))


def escalate_referral(overdue: Overdue, now: datetime, *, policy: EscalationPolicy) -> list[ReferralEscalated]:
    """An unanswered referral past its deadline: one escalation per deadline (its id derived from both)."""
    escalation = escalation_of(overdue, policy)
    return [
        ReferralEscalated.create(
            source=SOURCE,
            patient_id=overdue.patient_id,
            data=escalation,
            correlation_id=overdue.correlation_id,
            event_id=derived_id(f"referral-escalated:{escalation.escalation}", overdue.referral_id),
            time=now,
        )
    ]
