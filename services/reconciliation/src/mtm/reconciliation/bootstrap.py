"""The one place that wires the reconciliation service: settings, streams it owns, broker, pool, handlers."""

from __future__ import annotations

from importlib.resources import files

from faststream import FastStream

from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.settings import ServiceSettings
from mtm.platform.streams import DISCHARGE_INTAKE, PATIENT_EVENTS
from mtm.reconciliation.handlers import (
    on_discharge_received,
    on_medication_list_requested,
    on_medications_reconciled,
    on_transition_of_care_recorded,
)


class ReconciliationSettings(ServiceSettings):
    service: str = "reconciliation"


def create_app(settings: ReconciliationSettings | None = None) -> FastStream:
    definition = ServiceDefinition(
        name="reconciliation",
        migrations=files("mtm.reconciliation") / "migrations",
        owned_streams=(PATIENT_EVENTS, DISCHARGE_INTAKE),
        consumers=lambda _: [
            on_discharge_received.consumer(),
            on_transition_of_care_recorded.consumer(),
            on_medications_reconciled.consumer(),
        ],
        commands=lambda _: [on_medication_list_requested.ROUTE],
    )
    return create_service_app(definition, settings or ReconciliationSettings())
