"""What review's projection knows of a member when a pharmacy fill arrives, read for the fill's drug checks."""

from __future__ import annotations

import json
from datetime import timedelta

from mtm.contracts import MedicationDispensed
from mtm.contracts.events import Alert, Reconciliation
from mtm.contracts.program import Dispense
from mtm.platform.service import Database
from mtm.review.domain.fills import SUPPLY_GRACE, EarlierFill, FillContext
from mtm.review.domain.overrides import ActiveOverride, alert_key

ENROLLED = "SELECT enrolled FROM members WHERE patient_id = $1"
LATEST_RECONCILIATION = "SELECT reconciliation FROM latest_reconciliations WHERE patient_id = $1"
# Only fills whose supply may still run on the new fill's date (a supply lasts at most 400 days).
EARLIER_FILLS = """
SELECT event_id, dispense, recorded_at FROM fills WHERE patient_id = $1 AND filled_on >= $2
ORDER BY filled_on, recorded_at
"""
OVERRIDES = "SELECT override_id, alert_key, override FROM alert_overrides WHERE patient_id = $1"
RAISED = """
SELECT a.alert FROM review_tasks t, json_array_elements(t.created_event -> 'data' -> 'alerts') AS a(alert)
WHERE t.patient_id = $1 AND t.trigger = 'high-alert'
"""
LONGEST_SUPPLY = timedelta(days=400)


class MemberFillRecords:
    """The member as review's tables hold them (they may lag the log by what other consumers have not applied)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def fill_context(self, event: MedicationDispensed) -> FillContext:
        patient = event.patient_id
        since = event.data.filled_on - LONGEST_SUPPLY - SUPPLY_GRACE
        async with self._database.acquire() as conn:
            enrolled = await conn.fetchval(ENROLLED, patient)
            reconciliation = await conn.fetchval(LATEST_RECONCILIATION, patient)
            fills = await conn.fetch(EARLIER_FILLS, patient, since)
            overrides = await conn.fetch(OVERRIDES, patient)
            raised = await conn.fetch(RAISED, patient)
        return FillContext(
            enrolled=bool(enrolled),
            reconciliation=Reconciliation.model_validate_json(reconciliation) if reconciliation else None,
            earlier_fills=tuple(
                EarlierFill(row["event_id"], Dispense.model_validate_json(row["dispense"]), row["recorded_at"])
                for row in fills
            ),
            overrides=tuple(
                ActiveOverride(str(row["override_id"]), row["alert_key"], data["severity"], tuple(data["regimen"]))
                for row in overrides
                for data in (json.loads(row["override"]),)
            ),
            raised=frozenset(alert_key(Alert.model_validate_json(row["alert"])) for row in raised),
        )
