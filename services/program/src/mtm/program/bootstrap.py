"""The one place that wires the program service: settings, handler table, runtime."""

from __future__ import annotations

from faststream import FastStream

from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.program.domain.targeting import Plan
from mtm.program.handlers import handlers
from mtm.program.settings import ProgramSettings


def create_app(settings: ProgramSettings | None = None) -> FastStream:
    settings = settings or ProgramSettings()
    plan = Plan(
        min_chronic_diseases=settings.program_min_chronic_diseases,
        min_maintenance_drugs=settings.program_min_maintenance_drugs,
        cost_per_maintenance_drug=settings.program_cost_per_drug,
    )
    definition = ServiceDefinition(
        name="program",
        handlers=handlers(plan=plan, evaluation_every_s=settings.program_evaluation_every_s),
        consumed_streams=(PATIENT_EVENTS_STREAM,),
    )
    return create_service_app(definition, settings)
