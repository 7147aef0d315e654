"""What review's projection knows of a member when a pharmacy fill arrives, read for the fill's drug checks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

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
SELECT event_id, filled_on, dispense, recorded_at FROM fills WHERE patient_id = $1 AND filled_on >= $2
ORDER BY filled_on, recorded_at
"""
OVERRIDES = "SELECT override_id, alert_key, override FROM alert_overrides WHERE patient_id = $1"
RAISED = """
SELECT a.alert FROM review_tasks t, json_array_elements(t.created_event -> 'data' -> 'alerts') AS a(alert)
WHERE t.patient_id = $1 AND t.trigger = 'high-alert'
"""
# The same for a batch's patients, one statement per table. The fills are joined on the unnest of (patient, earliest
# date any of their fills asks for), which probes `fills_patient` per patient; each fill then keeps its own window.
ENROLLED_MANY = "SELECT patient_id, enrolled FROM members WHERE patient_id = ANY($1::text[])"
LATEST_RECONCILIATION_MANY = """
SELECT patient_id, reconciliation FROM latest_reconciliations WHERE patient_id = ANY($1::text[])
"""
EARLIER_FILLS_MANY = """
SELECT f.patient_id, f.event_id, f.filled_on, f.dispense, f.recorded_at
FROM unnest($1::text[], $2::date[]) AS p(patient_id, since)
JOIN fills f ON f.patient_id = p.patient_id AND f.filled_on >= p.since
ORDER BY f.patient_id, f.filled_on, f.recorded_at
"""
OVERRIDES_MANY = """
SELECT patient_id, override_id, alert_key, override FROM alert_overrides WHERE patient_id = ANY($1::text[])
"""
RAISED_MANY = """
SELECT t.patient_id, a.alert
FROM review_tasks t, json_array_elements(t.created_event -> 'data' -> 'alerts') AS a(alert)
WHERE t.patient_id = ANY($1::text[]) AND t.trigger = 'high-alert'
"""
LONGEST_SUPPLY = timedelta(days=400)
# Answers looked up but never asked for (a batch given up half way) are dropped past this many.
LOOKED_UP_MAX = 100_000


def _since(event: MedicationDispensed) -> date:
    return event.data.filled_on - LONGEST_SUPPLY - SUPPLY_GRACE


class _Member:
    """One patient's rows, read once for all of a batch's fills of that patient."""

    def __init__(
        self,
        enrolled: Any,
        reconciliation: Any,
        fills: Iterable[Any],
        overrides: Iterable[Any],
        raised: Iterable[Any],
    ) -> None:
        self.enrolled = bool(enrolled)
        self.reconciliation = Reconciliation.model_validate_json(reconciliation) if reconciliation else None
        self.fills = tuple(
            (
                row["filled_on"],
                EarlierFill(row["event_id"], Dispense.model_validate_json(row["dispense"]), row["recorded_at"]),
            )
            for row in fills
        )
        self.overrides = tuple(
            ActiveOverride(str(row["override_id"]), row["alert_key"], data["severity"], tuple(data["regimen"]))
            for row in overrides
            for data in (json.loads(row["override"]),)
        )
        self.raised = frozenset(alert_key(Alert.model_validate_json(row["alert"])) for row in raised)

    def context(self, since: date) -> FillContext:
        return FillContext(
            enrolled=self.enrolled,
            reconciliation=self.reconciliation,
            earlier_fills=tuple(fill for filled_on, fill in self.fills if filled_on >= since),
            overrides=self.overrides,
            raised=self.raised,
        )


class MemberFillRecords:
    """The member as review's tables hold them (they may lag the log by what other consumers have not applied).

    A consumer looks a whole batch up at once (`look_up`): each fill's context is then taken once by the use case
    reviewing that fill, and a fill not looked up is read on its own. The answers are as of the batch's start, as
    those read one by one were: the batch's own fills and reviews are recorded only when it commits, so two fills of
    one patient in a batch each see the records without the other, looked up together or not.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._looked_up: dict[uuid.UUID, FillContext] = {}

    async def look_up(self, events: Sequence[MedicationDispensed]) -> None:
        if not events:
            return
        since: dict[str, date] = {}
        for event in events:
            since[event.patient_id] = min(since.get(event.patient_id, date.max), _since(event))
        patients = list(since)
        async with self._database.acquire() as conn:
            enrolled = await conn.fetch(ENROLLED_MANY, patients)
            reconciliations = await conn.fetch(LATEST_RECONCILIATION_MANY, patients)
            fills = await conn.fetch(EARLIER_FILLS_MANY, patients, [since[p] for p in patients])
            overrides = await conn.fetch(OVERRIDES_MANY, patients)
            raised = await conn.fetch(RAISED_MANY, patients)
        enrolled_of = {row["patient_id"]: row["enrolled"] for row in enrolled}
        reconciliation_of = {row["patient_id"]: row["reconciliation"] for row in reconciliations}
        fills_of, overrides_of, raised_of = _by_patient(fills), _by_patient(overrides), _by_patient(raised)
        members = {
            patient: _Member(
                enrolled_of.get(patient),
                reconciliation_of.get(patient),
                fills_of.get(patient, ()),
                overrides_of.get(patient, ()),
                raised_of.get(patient, ()),
            )
            for patient in patients
        }
        if len(self._looked_up) > LOOKED_UP_MAX:
            self._looked_up.clear()
        self._looked_up.update({event.id: members[event.patient_id].context(_since(event)) for event in events})

    async def fill_context(self, event: MedicationDispensed) -> FillContext:
        looked_up = self._looked_up.pop(event.id, None)
        if looked_up is not None:
            return looked_up
        patient = event.patient_id
        since = _since(event)
        async with self._database.acquire() as conn:
            enrolled = await conn.fetchval(ENROLLED, patient)
            reconciliation = await conn.fetchval(LATEST_RECONCILIATION, patient)
            fills = await conn.fetch(EARLIER_FILLS, patient, since)
            overrides = await conn.fetch(OVERRIDES, patient)
            raised = await conn.fetch(RAISED, patient)
        return _Member(enrolled, reconciliation, fills, overrides, raised).context(since)


def _by_patient(rows: Iterable[Any]) -> dict[str, list[Any]]:
    """Rows grouped by their patient, each group in the order the query returned it."""
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row["patient_id"], []).append(row)
    return grouped
