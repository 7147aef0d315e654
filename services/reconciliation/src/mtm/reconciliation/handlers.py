"""Everything the reconciliation service consumes and answers, in one table."""

from __future__ import annotations

from functools import partial

from mtm.contracts import (
    EVENTS,
    EventRegistry,
    GetMedicationHistory,
    GetMedicationList,
    MedicationDispensed,
    MedicationsReconciled,
    TransitionOfCareRecorded,
)
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_STREAM,
    DISCHARGE_INTAKE_SUBJECT,
    FILL_INTAKE_STREAM,
    FILL_INTAKE_SUBJECT,
    GET_MEDICATION_HISTORY,
    GET_MEDICATION_LIST,
)
from mtm.platform.service import Database, Query, Reaction, ServiceHandlers, on_event
from mtm.reconciliation import application
from mtm.reconciliation.adapters import intake, reconciliations


def handlers(database: Database, registry: EventRegistry = EVENTS) -> ServiceHandlers:
    ledger = reconciliations.DischargeLedger(database)
    retired_ledger = reconciliations.DischargeLedger(database)
    return ServiceHandlers(
        projection=reconciliations.RECONCILIATIONS,
        reactions=(
            # A discharge is recorded and reconciled in one transaction: both events reach the log together.
            Reaction(
                durable="reconciliation-discharge-intake",
                stream=DISCHARGE_INTAKE_STREAM,
                filter_subjects=(DISCHARGE_INTAKE_SUBJECT,),
                parse=intake.discharge_parser(registry),
                react=partial(application.record_discharge, ledger=ledger),
                emits=(TransitionOfCareRecorded, MedicationsReconciled),
                accepts=(TransitionOfCareRecorded, intake.FHIR_BUNDLE_SCHEMA),
                prefetch=ledger.look_up,
            ),
            Reaction(
                durable="reconciliation-fill-intake",
                stream=FILL_INTAKE_STREAM,
                filter_subjects=(FILL_INTAKE_SUBJECT,),
                parse=intake.fill_parser(registry),
                react=application.record_fills,
                emits=(MedicationDispensed,),
                accepts=(MedicationDispensed, intake.FHIR_BUNDLE_SCHEMA),
            ),
            # Up to the version that reconciled in the intake, this durable read the recorded discharges back and
            # reconciled them. On upgrade it may still hold some it had not: they are reconciled as it did (a
            # discharge reconciled before, or by the intake since, is found reconciled and causes nothing), then
            # the durable is deleted. Its own ledger: its batches run beside the intake's.
            on_event(
                TransitionOfCareRecorded,
                partial(application.reconcile_discharge, ledger=retired_ledger),
                durable="reconciliation-transition-of-care",
                emits=(MedicationsReconciled,),
                prefetch=retired_ledger.look_up,
                retiring=True,
            ),
        ),
        queries=(
            Query(
                GET_MEDICATION_LIST,
                GetMedicationList,
                ("pharmacist", "physician", "admin"),
                reconciliations.medication_list,
            ),
            Query(
                GET_MEDICATION_HISTORY,
                GetMedicationHistory,
                ("pharmacist", "physician", "admin"),
                reconciliations.medication_history,
            ),
        ),
    )
