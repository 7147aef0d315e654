"""The one place that wires the review service: settings, knowledge base, handler table, runtime."""

from __future__ import annotations

from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.service import Database
from mtm.review.drug_checks import DrugChecker, build_drug_checkers
from mtm.review.handlers import handlers
from mtm.review.settings import ReviewSettings


def create_app(settings: ReviewSettings | None = None, *, checker: DrugChecker | None = None) -> FastStream:
    settings = settings or ReviewSettings()
    database = Database()
    check, fill_check = (checker, checker) if checker else build_drug_checkers(settings.review_kb_path)
    definition = ServiceDefinition(
        name="review",
        handlers=handlers(check, database, fill_check=fill_check, timer_every_s=settings.review_timer_every_s),
        consumed_streams=(PATIENT_EVENTS_STREAM,),
        database=database,
    )
    return create_service_app(definition, settings)
