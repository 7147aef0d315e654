"""AnswerReferral: the addressed physician accepts, declines or modifies; published as ReferralAnswered."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from mtm.contracts import AnswerReferral, CommandReply, ReferralAnswered
from mtm.contracts.events import ReferralAnswer
from mtm.contracts.subjects import ANSWER_REFERRAL
from mtm.platform.outbox import enqueue_events
from mtm.platform.runtime import CommandRoute
from mtm.referral.adapters.referrals import ReferralRepository
from mtm.referral.domain.referrals import decide_answer, derived_id

SOURCE = "mtm/referral"


async def handle(conn: asyncpg.Connection, command: AnswerReferral) -> CommandReply:
    referrals = ReferralRepository(conn)
    referral = await referrals.lock(command.referral_id)
    if referral is None:
        return CommandReply(outcome="not_found", message="no such referral", resource_id=str(command.referral_id))
    decision = decide_answer(referral.state, command.physician_id, command.decision)
    if decision.outcome == "conflict":
        return CommandReply(
            outcome="conflict",
            message=decision.message,
            resource_id=str(command.referral_id),
            status=referral.state.status,
        )
    if decision.outcome == "accepted":
        now = datetime.now(UTC)
        answer = ReferralAnswer(
            referral_id=command.referral_id,
            physician_id=command.physician_id,
            decision=command.decision,
            note=command.note,
        )
        await referrals.mark_answered(answer, now)
        answered = ReferralAnswered.create(
            source=SOURCE,
            patient_id=referral.patient_id,
            data=answer,
            correlation_id=referral.correlation_id,
            causation_id=command.command_id,
            event_id=derived_id("referral-answered", command.referral_id),
            time=now,
        )
        await enqueue_events(conn, [answered])
    return CommandReply(
        outcome="accepted", message=decision.message, resource_id=str(command.referral_id), status=command.decision
    )


ROUTE = CommandRoute(subject=ANSWER_REFERRAL, model=AnswerReferral, handle=handle)
