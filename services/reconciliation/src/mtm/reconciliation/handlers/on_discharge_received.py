"""A discharge from a hospital (native contract or FHIR R4 Bundle) → TransitionOfCareRecorded on the patient log."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from mtm.contracts import TransitionOfCareRecorded
from mtm.contracts.subjects import DISCHARGE_INTAKE_STREAM, DISCHARGE_INTAKE_SUBJECT
from mtm.fhir import is_fhir_bundle, parse_bundle
from mtm.platform.consumer import Accepted, BatchConsumer, Delivery, InvalidMessage
from mtm.platform.outbox import enqueue_events

SOURCE = "mtm/reconciliation/intake"
DURABLE = "reconciliation-discharge-intake"
_NAMESPACE = uuid.UUID("3f6c1c8e-8d2f-4b0a-9f77-1d2e0c5b9a10")


def decode(delivery: Delivery) -> TransitionOfCareRecorded:
    body = json.loads(delivery.data)
    if not isinstance(body, dict):
        raise InvalidMessage(f"body: expected a JSON object, got {type(body).__name__}")
    if not is_fhir_bundle(body):
        return TransitionOfCareRecorded.model_validate(body)
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


async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[TransitionOfCareRecorded]]) -> None:
    await enqueue_events(conn, [item.value for item in batch])


def consumer() -> BatchConsumer[TransitionOfCareRecorded]:
    return BatchConsumer(
        durable=DURABLE,
        stream=DISCHARGE_INTAKE_STREAM,
        filter_subjects=(DISCHARGE_INTAKE_SUBJECT,),
        decode=decode,
        apply=apply,
    )
