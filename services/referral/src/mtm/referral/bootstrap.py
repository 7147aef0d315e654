"""The one place that wires the referral service: settings, broker, pool, handlers."""

from __future__ import annotations

from importlib.resources import files

from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.settings import ServiceSettings
from mtm.referral.handlers import on_answer_referral, on_list_referrals, on_review_task_completed


class ReferralSettings(ServiceSettings):
    service: str = "referral"


def create_app(settings: ReferralSettings | None = None) -> FastStream:
    definition = ServiceDefinition(
        name="referral",
        migrations=files("mtm.referral") / "migrations",
        consumed_streams=(PATIENT_EVENTS_STREAM,),
        consumers=lambda _: [on_review_task_completed.consumer()],
        commands=lambda _: [on_answer_referral.ROUTE, on_list_referrals.ROUTE],
    )
    return create_service_app(definition, settings or ReferralSettings())
