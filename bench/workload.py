"""The benchmark population: transition-of-care events built from the 200 Synthea patients, with fresh ids."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from mtm.contracts import TransitionOfCareRecorded
from mtm.contracts.events import TransitionOfCare
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, event_subject
from mtm.fhir import parse_bundle
from mtm.fhir.synthea import transitions_from_patient_bundle

SYNTHEA = Path(__file__).resolve().parent.parent / "data" / "synthea" / "bundles"
SOURCE = "urn:mtm:bench:load-generator"


@cache
def synthea_transitions() -> tuple[TransitionOfCare, ...]:
    """Every transition of care in the Synthea population (229 from 200 patients), parsed once."""
    found = []
    for path in sorted(SYNTHEA.glob("*.json")):
        for bundle in transitions_from_patient_bundle(json.loads(path.read_text())):
            found.append(parse_bundle(bundle))
    return tuple(found)


def transition_events(
    count: int, *, run_id: str | None = None, patients: int | None = None
) -> Iterator[TransitionOfCareRecorded]:
    """`count` discharges cycling through the population; each gets a new patient id unless `patients` caps them.

    With `patients`, discharges are spread over that many patients, so one patient has several discharges in a
    row (what the per-patient ordering and partitioning tests need).
    """
    run = run_id or uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    population = synthea_transitions()
    for n, transition in zip(range(count), itertools.cycle(population), strict=False):
        patient_id = f"b{run}-{n % patients if patients else n}"
        data = transition.model_copy(
            update={
                "patient": transition.patient.model_copy(update={"patient_id": patient_id}),
                **discharged_now(transition, now),
            }
        )
        yield TransitionOfCareRecorded.create(source=SOURCE, patient_id=patient_id, data=data, time=now)


def encoded(event: TransitionOfCareRecorded) -> tuple[str, bytes, dict[str, str]]:
    """Subject, body and headers exactly as a producer publishes the event on the patient log."""
    return event_subject(event), event.model_dump_json().encode(), {"Nats-Msg-Id": str(event.id)}


def sent_by_hospital(event: TransitionOfCareRecorded) -> tuple[str, bytes, dict[str, str]]:
    """Subject, body and headers as a hospital's discharge system publishes the discharge to mtm's intake."""
    return DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), {"Nats-Msg-Id": str(event.id)}


def discharged_now(transition: TransitionOfCare, now: datetime) -> dict[str, datetime]:
    """The stay moved to end now, as a hospital sends a discharge when it happens.

    Synthea's stays ended years ago: their review tasks (due 7 days after discharge) were overdue on arrival, so
    every discharge also cost an escalation (a timer query, a `ReviewTaskOverdue` through the outbox, the log
    and its readers) that live traffic does not.
    """
    if transition.discharged_at is None:
        return {}
    shift = now - transition.discharged_at
    moved = {"discharged_at": now}
    if transition.admitted_at is not None:
        moved["admitted_at"] = transition.admitted_at + shift
    return moved
