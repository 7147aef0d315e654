"""The one place that wires the review service: settings, knowledge base, broker, pool, handlers."""

from __future__ import annotations

from importlib.resources import files

from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.review.drug_checks import DrugChecker, build_drug_checker
from mtm.review.handlers import (
    on_claim_review_task,
    on_complete_review_task,
    on_list_review_tasks,
    on_medications_reconciled,
)
from mtm.review.settings import ReviewSettings


def create_app(settings: ReviewSettings | None = None, *, checker: DrugChecker | None = None) -> FastStream:
    settings = settings or ReviewSettings()
    drug_checker = checker or build_drug_checker(settings.review_kb_path)
    definition = ServiceDefinition(
        name="review",
        migrations=files("mtm.review") / "migrations",
        consumed_streams=(PATIENT_EVENTS_STREAM,),
        consumers=lambda _: [on_medications_reconciled.consumer(drug_checker)],
        commands=lambda _: [on_claim_review_task.ROUTE, on_complete_review_task.ROUTE, on_list_review_tasks.ROUTE],
    )
    return create_service_app(definition, settings)
