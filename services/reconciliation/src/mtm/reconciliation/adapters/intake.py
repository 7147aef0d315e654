"""Discharges as hospitals send them (a native TransitionOfCareRecorded or a FHIR R4 Bundle) → the contract."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

from mtm.contracts import EventRegistry, TransitionOfCareRecorded
from mtm.contracts.limits import NUL_REFUSED, has_nul
from mtm.fhir import is_fhir_bundle, parse_bundle
from mtm.platform.consumer import Delivery, InvalidMessage

SOURCE = "mtm/reconciliation/intake"
_NAMESPACE = uuid.UUID("3f6c1c8e-8d2f-4b0a-9f77-1d2e0c5b9a10")


def discharge_parser(registry: EventRegistry):
    def parse(delivery: Delivery) -> TransitionOfCareRecorded:
        if has_nul(delivery.data):
            raise InvalidMessage(NUL_REFUSED)
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
