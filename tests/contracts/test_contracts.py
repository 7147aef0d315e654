"""Contracts v1: golden samples round-trip, match the exported JSON Schemas, and bad events name the field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from mtm.contracts import EVENT_TYPES, TransitionOfCareRecorded, parse_event
from mtm.contracts.events import EVENT_CLASSES
from mtm.contracts.schema import schemas
from mtm.contracts.subjects import (
    PATIENT_PARTITIONS,
    event_filter,
    event_subject,
    partition_filters,
    patient_partition,
    patient_subject,
    subject_token,
)

pytestmark = pytest.mark.unit

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
SAMPLES = sorted((CONTRACTS / "samples").glob("*.v1.json"))


def test_every_event_has_a_golden_sample() -> None:
    assert {p.name.removesuffix(".v1.json") for p in SAMPLES} == {cls.EVENT_NAME for cls in EVENT_CLASSES}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_golden_sample_round_trips_and_matches_its_schema(sample: Path) -> None:
    raw = json.loads(sample.read_text())
    event = parse_event(sample.read_bytes())
    assert type(event) is EVENT_TYPES[raw["type"]]
    assert event.model_dump(mode="json") == raw
    assert type(event).model_validate_json(event.model_dump_json()) == event
    schema = json.loads((CONTRACTS / "schemas" / f"{type(event).EVENT_NAME}.v1.schema.json").read_text())
    jsonschema.validate(raw, schema)
    partition = patient_partition(event.patient_id)
    assert event_subject(event) == f"mtm.patient.{partition}.{event.patient_id}.{type(event).EVENT_NAME}.v1"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_an_event_written_around_its_data_json_is_the_events_own_json(sample: Path) -> None:
    """Tables and the outbox may take an event's JSON built around data serialized for something else: it must be
    byte for byte what the event serializes to, with and without a cause, with text outside ASCII."""
    event = parse_event(sample.read_bytes())
    variants = [
        event,
        event.model_copy(update={"causation_id": None}),
        event.model_copy(update={"source": 'mtm/"quoted",\\data:é', "causation_id": event.id}),
    ]
    for variant in variants:
        assert variant.json_around(variant.data.model_dump_json()) == variant.model_dump_json()


def test_exported_schemas_are_up_to_date() -> None:
    """Regenerate with `uv run python -m mtm.contracts.schema contracts/schemas` after changing a contract."""
    for name, schema in schemas().items():
        committed = json.loads((CONTRACTS / "schemas" / f"{name}.schema.json").read_text())
        assert committed == json.loads(json.dumps(schema)), f"{name} schema is stale"


def _sample(name: str) -> dict:
    return json.loads((CONTRACTS / "samples" / f"{name}.v1.json").read_text())


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("data", "patient", "birth_date"), "1948-02-30", "data.patient.birth_date"),
        (("data", "home_medications", 0, "dose_value"), -5, "data.home_medications.0.dose_value"),
        (("data", "discharge_medications", 1, "list_flag"), "07", "data.discharge_medications.1.list_flag"),
        (("time",), "2026-11-20T14:30:00", "time"),
        (("subject",), "Patient/has space", "subject"),
    ],
)
def test_an_invalid_event_is_rejected_naming_the_field(path: tuple, value: object, field: str) -> None:
    raw = _sample("transition_of_care_recorded")
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError) as caught:
        TransitionOfCareRecorded.model_validate(raw)
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_the_patient_in_the_data_must_be_the_subject() -> None:
    raw = _sample("transition_of_care_recorded")
    raw["data"]["patient"]["patient_id"] = "someone-else"
    with pytest.raises(ValidationError, match="does not match subject"):
        TransitionOfCareRecorded.model_validate(raw)


def test_unknown_fields_from_newer_producers_are_ignored() -> None:
    raw = _sample("review_task_claimed")
    raw["data"]["shift"] = "night"
    raw["extension"] = "x"
    assert parse_event(json.dumps(raw)).data.pharmacist_id == "rph-ana"


def test_patient_ids_become_safe_subject_tokens() -> None:
    assert subject_token("abc-123") == "abc-123"
    assert patient_subject("a.b", "x") == f"mtm.patient.{patient_partition('a.b')}.a%2Eb.x.v1"
    assert "*" not in subject_token("a*>b c") and ">" not in subject_token("a*>b c")


def test_patients_spread_over_a_fixed_number_of_partitions_computable_anywhere() -> None:
    import zlib

    patient = "8f3c2a10-5b1e-4c6d-9a7e-2b4f6d8e0a13"
    assert patient_partition(patient) == zlib.crc32(patient.encode()) % 16
    counts = [0] * PATIENT_PARTITIONS
    for n in range(16_000):
        counts[patient_partition(f"patient-{n}")] += 1
    assert min(counts) > 800  # roughly even: no partition is starved or hot
    from mtm.contracts import ReviewTaskClaimed

    # Filters match every stored version of the event (`.v1`, `.v2`, ...), so old events stay readable.
    assert event_filter(ReviewTaskClaimed) == "mtm.patient.*.*.review_task_claimed.*"
    assert partition_filters(ReviewTaskClaimed, [3, 1]) == (
        "mtm.patient.1.*.review_task_claimed.*",
        "mtm.patient.3.*.review_task_claimed.*",
    )
