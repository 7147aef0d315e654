"""A table of every service's inbound event consumer, so delivery guarantees are tested for each of them."""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtm.contracts import (
    EventEnvelope,
    MedicationDispensed,
    MedicationsReconciled,
    NotificationDelivered,
    ReferralRequested,
    ReviewTaskCompleted,
    ReviewTaskCreated,
    TransitionOfCareRecorded,
)
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, FILL_INTAKE_SUBJECT, event_subject, patient_subject
from mtm.platform.streams import DISCHARGE_INTAKE, FILL_INTAKE, PATIENT_EVENTS, StreamSpec
from support.events import medications_reconciled, new_patient_id, referral_requested, review_task_completed

SAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "samples"


def native_discharge(patient_id: str) -> TransitionOfCareRecorded:
    body = json.loads((SAMPLES / "transition_of_care_recorded.v1.json").read_text())
    event_id = str(uuid.uuid4())
    body.update(id=event_id, correlation_id=event_id, subject=f"Patient/{patient_id}")
    body["data"]["patient"]["patient_id"] = patient_id
    return TransitionOfCareRecorded.model_validate(body)


def native_fill(patient_id: str) -> MedicationDispensed:
    """The golden fill sample for another patient, as a pharmacy sends it: metformin, not yet resolved."""
    body = json.loads((SAMPLES / "medication_dispensed.v1.json").read_text())
    event_id = str(uuid.uuid4())
    body.update(id=event_id, correlation_id=event_id, causation_id=None, subject=f"Patient/{patient_id}")
    body["data"].update(dispense_id=f"rx-{event_id[:8]}", ingredients=[], filled_on="2025-11-03")
    body["data"]["medication"].update(text="Metformin 500 MG Oral Tablet", rxnorm_code=None)
    return MedicationDispensed.model_validate(body)


@dataclass(frozen=True)
class InboundCase:
    """One consumer: what it reads, what it publishes, and how to build its service."""

    service: str
    durable: str
    stream: str
    streams: tuple[StreamSpec, ...]
    good: Callable[[str], tuple[str, bytes, str]]
    bad_subject: Callable[[str], str]
    output: type[EventEnvelope]
    outputs_per_input: int
    create_app: Callable[..., Any]
    settings: Callable[[], type]
    extra_settings: dict[str, Any]

    def __str__(self) -> str:
        return self.durable


def _event_message(build: Callable[[str], EventEnvelope]) -> Callable[[str], tuple[str, bytes, str]]:
    def make(patient_id: str) -> tuple[str, bytes, str]:
        event = build(patient_id)
        return event_subject(event), event.model_dump_json().encode(), str(event.id)

    return make


def _intake(patient_id: str) -> tuple[str, bytes, str]:
    event = native_discharge(patient_id)
    return DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), str(event.id)


def _fill_intake(patient_id: str) -> tuple[str, bytes, str]:
    event = native_fill(patient_id)
    return FILL_INTAKE_SUBJECT, event.model_dump_json().encode(), str(event.id)


def _patient_subject(event_cls: type[EventEnvelope]) -> Callable[[str], str]:
    return lambda patient_id: patient_subject(patient_id, event_cls.EVENT_NAME)


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """Import a service only when its case runs, so one broken service does not hide the others' results."""

    def call(*args: Any) -> Any:
        target = getattr(importlib.import_module(module), name)
        return target(*args) if args else target

    return call


INBOUND_CASES = (
    InboundCase(
        service="reconciliation",
        durable="reconciliation-discharge-intake",
        stream="DISCHARGE_INTAKE",
        streams=(PATIENT_EVENTS, DISCHARGE_INTAKE),
        good=_intake,
        bad_subject=lambda _: DISCHARGE_INTAKE_SUBJECT,
        output=TransitionOfCareRecorded,
        outputs_per_input=1,
        create_app=_lazy("mtm.reconciliation.bootstrap", "create_app"),
        settings=_lazy("mtm.reconciliation.bootstrap", "ReconciliationSettings"),
        extra_settings={},
    ),
    InboundCase(
        service="reconciliation",
        durable="reconciliation-fill-intake",
        stream="FILL_INTAKE",
        streams=(PATIENT_EVENTS, DISCHARGE_INTAKE, FILL_INTAKE),
        good=_fill_intake,
        bad_subject=lambda _: FILL_INTAKE_SUBJECT,
        output=MedicationDispensed,
        outputs_per_input=1,
        create_app=_lazy("mtm.reconciliation.bootstrap", "create_app"),
        settings=_lazy("mtm.reconciliation.bootstrap", "ReconciliationSettings"),
        extra_settings={},
    ),
    InboundCase(
        service="review",
        durable="review-medications-reconciled",
        stream="PATIENT_EVENTS",
        streams=(PATIENT_EVENTS,),
        good=_event_message(medications_reconciled),
        bad_subject=_patient_subject(MedicationsReconciled),
        output=ReviewTaskCreated,
        outputs_per_input=1,
        create_app=_lazy("mtm.review.bootstrap", "create_app"),
        settings=_lazy("mtm.review.settings", "ReviewSettings"),
        extra_settings={},
    ),
    InboundCase(
        service="referral",
        durable="referral-review-task-completed",
        stream="PATIENT_EVENTS",
        streams=(PATIENT_EVENTS,),
        good=_event_message(review_task_completed),
        bad_subject=_patient_subject(ReviewTaskCompleted),
        output=ReferralRequested,
        outputs_per_input=1,
        create_app=_lazy("mtm.referral.bootstrap", "create_app"),
        settings=_lazy("mtm.referral.bootstrap", "ReferralSettings"),
        extra_settings={},
    ),
    InboundCase(
        service="notify",
        durable="notify-referral-requested",
        stream="PATIENT_EVENTS",
        streams=(PATIENT_EVENTS,),
        good=_event_message(referral_requested),
        bad_subject=_patient_subject(ReferralRequested),
        output=NotificationDelivered,
        outputs_per_input=1,
        create_app=_lazy("mtm.notify.bootstrap", "create_app"),
        settings=_lazy("mtm.notify.settings", "NotifySettings"),
        extra_settings={"notify_poll_s": 0.05},
    ),
)

__all__ = ["INBOUND_CASES", "InboundCase", "native_discharge", "native_fill", "new_patient_id"]
