"""Everything the referral service consumes and answers, in one table."""

from __future__ import annotations

from mtm.contracts import AnswerReferral, ListReferrals, ReferralAnswered, ReviewTaskCompleted
from mtm.contracts.subjects import ANSWER_REFERRAL, LIST_REFERRALS
from mtm.platform.service import Command, Query, ServiceHandlers, on_event
from mtm.referral import application
from mtm.referral.adapters import referrals
from mtm.referral.domain.referrals import REFERRAL_EVENTS


def handlers() -> ServiceHandlers:
    return ServiceHandlers(
        projection=referrals.REFERRALS,
        reactions=(
            on_event(
                ReviewTaskCompleted,
                application.request_referrals,
                durable="referral-review-task-completed",
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
        ),
        queries=(Query(LIST_REFERRALS, ListReferrals, ("physician", "pharmacist", "admin"), referrals.list_referrals),),
    )
