"""GetMedicationList: a patient's current medication list with provenance, or as a FHIR List."""

from __future__ import annotations

import asyncpg

from mtm.contracts import CommandReply, GetMedicationList
from mtm.contracts.subjects import GET_MEDICATION_LIST
from mtm.platform.runtime import CommandRoute
from mtm.reconciliation.adapters.reconciliations import ReconciliationRepository
from mtm.reconciliation.domain import to_fhir_list


async def handle(conn: asyncpg.Connection, query: GetMedicationList) -> CommandReply:
    found = await ReconciliationRepository(conn).medication_list(query.patient_id)
    if found is None:
        return CommandReply(
            outcome="not_found", message="no medication list for this patient", resource_id=query.patient_id
        )
    data = to_fhir_list(found) if query.format == "fhir" else found.model_dump(mode="json")
    return CommandReply(outcome="accepted", resource_id=query.patient_id, data=data)


ROUTE = CommandRoute(subject=GET_MEDICATION_LIST, model=GetMedicationList, handle=handle, transactional=False)
