"""Referral's use cases: turn a completed review into referrals, record the physician's answer."""

from __future__ import annotations

from datetime import datetime

from mtm.contracts import AnswerReferral, CommandReply, ReferralAnswered, ReferralRequested, ReviewTaskCompleted
from mtm.contracts.events import ReferralAnswer
from mtm.contracts.identity import Actor
from mtm.platform.decisions import Decision, PatientHistory, decided
from mtm.referral.domain.referrals import REFERRAL_EVENTS, decide_answer, derived_id, fold_referral, referrals_for

SOURCE = "mtm/referral"


def request_referrals(event: ReviewTaskCompleted) -> list[ReferralRequested]:
    """One referral per recommendation that needs the prescriber; raises when the care team names no physician."""
    return [
        event.caused(
            ReferralRequested,
            source=SOURCE,
            data=referral,
            event_id=derived_id("referral-requested", referral.referral_id),
        )
        for referral in referrals_for(event.data)
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
