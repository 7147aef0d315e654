"""The one place that wires the referral service: settings, handler table, runtime."""

from __future__ import annotations

from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.settings import ServiceSettings
from mtm.referral.handlers import handlers


class ReferralSettings(ServiceSettings):
    service: str = "referral"


def create_app(settings: ReferralSettings | None = None) -> FastStream:
    definition = ServiceDefinition(name="referral", handlers=handlers(), consumed_streams=(PATIENT_EVENTS_STREAM,))
    return create_service_app(definition, settings or ReferralSettings())
