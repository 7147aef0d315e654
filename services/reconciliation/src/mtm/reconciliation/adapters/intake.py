"""Discharges and pharmacy fills as they are sent (native contracts or FHIR R4 Bundles) → the contracts."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, time

from mtm.contracts import EventRegistry, MedicationDispensed, TransitionOfCareRecorded
from mtm.contracts.limits import NUL_REFUSED, has_nul
from mtm.drugs import load_vocabulary, resolve
from mtm.fhir import is_fhir_bundle, parse_bundle
from mtm.fhir.member import parse_dispense_bundle
from mtm.platform.consumer import Delivery, InvalidMessage

SOURCE = "mtm/reconciliation/intake"
# The other form an intake message may take, for the AsyncAPI document: a FHIR R4 Bundle, read by mtm.fhir.
FHIR_BUNDLE_SCHEMA = {
    "title": "FhirR4Bundle",
    "description": "A FHIR R4 Bundle holding the Patient and the resources mtm reads: MedicationStatement and "
    "MedicationRequest (home and discharge lists), Condition, AllergyIntolerance, Observation (labs); for fills, "
    "MedicationDispense. See https://hl7.org/fhir/R4/bundle.html.",
    "type": "object",
    "required": ["resourceType", "entry"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"type": "string"},
        "entry": {"type": "array", "items": {"type": "object", "properties": {"resource": {"type": "object"}}}},
    },
}
_NAMESPACE = uuid.UUID("3f6c1c8e-8d2f-4b0a-9f77-1d2e0c5b9a10")


def discharge_parser(registry: EventRegistry):
    def parse(delivery: Delivery) -> TransitionOfCareRecorded:
        if has_nul(delivery.data):
            raise InvalidMessage(NUL_REFUSED)
        if _surely_native(delivery.data):
            # A native discharge is read once, not parsed as JSON first to tell (the first reading was about a
            # twentieth of the service's CPU per discharge). One that does not read is read again below, so it is
            # refused with the same reason as ever.
            try:
                return registry.parse(delivery.data, TransitionOfCareRecorded)
            except ValueError:
                pass
        body = json.loads(delivery.data)
        if not isinstance(body, dict):
            raise InvalidMessage(f"body: expected a JSON object, got {type(body).__name__}")
        if not is_fhir_bundle(body):
            return registry.parse(delivery.data, TransitionOfCareRecorded)
        transition = parse_bundle(body)
        # The same bundle sent twice is the same event: its id comes from the content.
        event_id = uuid.uuid5(_NAMESPACE, "fhir-bundle:" + hashlib.sha256(delivery.data).hexdigest())
        return TransitionOfCareRecorded.create(
            source=SOURCE,
            patient_id=transition.patient.patient_id,
            data=transition,
            event_id=event_id,
            time=transition.discharged_at or datetime.now(UTC),
        )

    return parse


def _surely_native(data: bytes) -> bool:
    """No key of the body can be `resourceType`, the mark of a FHIR resource: it is not named, not even escaped."""
    return b"resourceType" not in data and b"\\u" not in data


def fill_parser(registry: EventRegistry):
    """Pharmacy fills: a native MedicationDispensed, or a FHIR R4 Bundle of MedicationDispense (one event each)."""
    # Fills arrive in bulk: the vocabulary is read when the service starts, not inside the first batch.
    load_vocabulary()

    def native(event: MedicationDispensed) -> tuple[MedicationDispensed, ...]:
        if event.data.ingredients:
            return (event,)
        medication = event.data.medication
        resolved = tuple(resolve(medication.text, medication.rxnorm_code).ingredients)
        return (event.model_copy(update={"data": event.data.model_copy(update={"ingredients": resolved})}),)

    def parse(delivery: Delivery) -> tuple[MedicationDispensed, ...]:
        if has_nul(delivery.data):
            raise InvalidMessage(NUL_REFUSED)
        if b'"resourceType"' not in delivery.data:
            # No bundle: a native fill is read once, not parsed as JSON first to tell (most of a feed is native).
            # One that does not read is read again below, so it is refused with the same reason as ever.
            try:
                return native(registry.parse(delivery.data, MedicationDispensed))
            except ValueError:
                pass
        body = json.loads(delivery.data)
        if not isinstance(body, dict):
            raise InvalidMessage(f"body: expected a JSON object, got {type(body).__name__}")
        if not is_fhir_bundle(body):
            return native(registry.parse(delivery.data, MedicationDispensed))
        return tuple(
            MedicationDispensed.create(
                source=SOURCE,
                patient_id=patient_id,
                data=dispense,
                # The same fill sent again (a daily feed re-sends the last days) is the same event.
                event_id=uuid.uuid5(_NAMESPACE, f"fill:{patient_id}:{dispense.dispense_id}"),
                time=datetime.combine(dispense.filled_on, time(), UTC),
            )
            for patient_id, dispense in parse_dispense_bundle(body)
        )

    return parse
