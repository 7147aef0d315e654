"""The one place that wires the reconciliation service: settings, streams it owns, handler table, runtime."""

from __future__ import annotations

from faststream import FastStream

from mtm.platform.runtime import ServiceDefinition
from mtm.platform.runtime import create_app as create_service_app
from mtm.platform.service import Database
from mtm.platform.settings import ServiceSettings
from mtm.platform.streams import DISCHARGE_INTAKE, FILL_INTAKE, PATIENT_EVENTS
from mtm.reconciliation.handlers import handlers


class ReconciliationSettings(ServiceSettings):
    service: str = "reconciliation"


def create_app(settings: ReconciliationSettings | None = None) -> FastStream:
    database = Database()
    definition = ServiceDefinition(
        name="reconciliation",
        handlers=handlers(database),
        owned_streams=(PATIENT_EVENTS, DISCHARGE_INTAKE, FILL_INTAKE),
        database=database,
        # Reconciliation sees every patient first (discharges and fills come in here), so it keeps their event keys.
        keeps_keys=True,
    )
    return create_service_app(definition, settings or ReconciliationSettings())
