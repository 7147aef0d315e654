"""Settings of the referral service: how long a physician has to answer before a referral escalates."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from mtm.platform.settings import ServiceSettings
from mtm.referral.domain.referrals import EscalationPolicy


class ReferralSettings(ServiceSettings):
    service: str = "referral"
    referral_respond_within_s: float = Field(
        default=48 * 3600,
        gt=0,
        description="How long after a referral is requested it escalates when unanswered, and again after each "
        "reminder (MTM_REFERRAL_RESPOND_WITHIN_S; default 48 hours).",
    )
    referral_max_escalations: int = Field(default=3, ge=1, description="Reminders before escalation stops.")
    referral_escalation_check_s: float = Field(default=30.0, gt=0, description="How often deadlines are looked at.")

    def escalation_policy(self) -> EscalationPolicy:
        return EscalationPolicy(
            respond_within=timedelta(seconds=self.referral_respond_within_s),
            max_escalations=self.referral_max_escalations,
        )
