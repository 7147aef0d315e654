"""The one place that wires the referral service: settings, handler table, runtime."""

from __future__ import annotations

from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.referral.handlers import handlers
from mtm.referral.settings import ReferralSettings

__all__ = ["ReferralSettings", "create_app"]


def create_app(settings: ReferralSettings | None = None) -> FastStream:
    settings = settings or ReferralSettings()
    definition = ServiceDefinition(
        name="referral",
        handlers=handlers(settings.escalation_policy(), escalation_check_s=settings.referral_escalation_check_s),
        consumed_streams=(PATIENT_EVENTS_STREAM,),
    )
    return create_service_app(definition, settings)
