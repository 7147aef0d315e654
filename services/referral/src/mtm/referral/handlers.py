"""Everything the referral service consumes and answers, in one table."""

from __future__ import annotations

from functools import partial

from mtm.contracts import (
    AcknowledgeReferral,
    AnswerReferral,
    GetReferral,
    ListReferrals,
    NotificationFailed,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    ReferralRequested,
    ReviewTaskCompleted,
)
from mtm.contracts.subjects import ACKNOWLEDGE_REFERRAL, ANSWER_REFERRAL, GET_REFERRAL, LIST_REFERRALS
from mtm.platform.service import Command, Query, ServiceHandlers, on_event
from mtm.platform.timers import Timer
from mtm.referral import application
from mtm.referral.adapters import referrals
from mtm.referral.domain.referrals import REFERRAL_EVENTS, EscalationPolicy

READERS = ("physician", "pharmacist", "admin")


def _nothing_caused(event: NotificationFailed) -> list:
    return []


def handlers(policy: EscalationPolicy, *, escalation_check_s: float = 30.0) -> ServiceHandlers:
    return ServiceHandlers(
        projection=referrals.REFERRALS,
        reactions=(
            on_event(
                ReviewTaskCompleted,
                partial(application.request_referrals, policy=policy),
                durable="referral-review-task-completed",
                emits=(ReferralRequested,),
            ),
            # A notification notify could not deliver goes on the referral, for the pharmacist's follow-up.
            on_event(
                NotificationFailed,
                _nothing_caused,
                durable="referral-notification-failed",
                keeps_input=True,
            ),
        ),
        commands=(
            Command(
                ANSWER_REFERRAL,
                AnswerReferral,
                roles=("physician",),
                locate=referrals.patient_of_referral,
                decide=application.answer_referral,
                reads=REFERRAL_EVENTS,
                emits=(ReferralAnswered,),
                not_found="no such referral",
            ),
            Command(
                ACKNOWLEDGE_REFERRAL,
                AcknowledgeReferral,
                roles=("physician",),
                locate=referrals.patient_of_referral,
                decide=application.acknowledge_referral,
                reads=REFERRAL_EVENTS,
                emits=(ReferralAcknowledged,),
                not_found="no such referral",
            ),
        ),
        queries=(
            Query(LIST_REFERRALS, ListReferrals, READERS, referrals.list_referrals),
            Query(GET_REFERRAL, GetReferral, READERS, referrals.get_referral),
        ),
        timers=(
            Timer(
                name="referral-escalation",
                every_s=escalation_check_s,
                due=referrals.due_escalations,
                fire=partial(application.escalate_referral, policy=policy),
                emits=(ReferralEscalated,),
            ),
        ),
    )
