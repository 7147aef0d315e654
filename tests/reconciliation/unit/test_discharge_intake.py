"""The discharge intake reads a native discharge once, and still tells a FHIR Bundle however its keys are written."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from support.services import native_discharge

from mtm.contracts import EVENTS, TransitionOfCareRecorded
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT
from mtm.platform.consumer import Delivery
from mtm.reconciliation.adapters.intake import _surely_native, discharge_parser

pytestmark = pytest.mark.unit

parse = discharge_parser(EVENTS)


def delivered(data: bytes) -> Delivery:
    return Delivery(DISCHARGE_INTAKE_SUBJECT, "DISCHARGE_INTAKE", 1, 1, {}, data, raw=None)  # type: ignore[arg-type]


def test_a_native_discharge_reads_as_its_contract_says() -> None:
    event = native_discharge("p-native")
    data = event.model_dump_json().encode()
    assert _surely_native(data)
    assert parse(delivered(data)) == EVENTS.parse(data, TransitionOfCareRecorded) == event


def test_a_body_naming_resource_type_in_any_spelling_is_not_taken_for_native() -> None:
    body = json.loads(native_discharge("p-bundle").model_dump_json())
    plain = json.dumps({**body, "resourceType": "Bundle"}).encode()
    # The same key with one letter escaped: JSON reads it as `resourceType` all the same.
    escaped = plain.replace(b'"resourceType"', b'"resource\\u0054ype"')
    assert not _surely_native(plain) and not _surely_native(escaped)
    for data in (plain, escaped):
        # Read as a FHIR Bundle (and refused as one), never recorded as the native discharge it also holds.
        with pytest.raises(ValueError, match=r"^Bundle: "):
            parse(delivered(data))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"[1, 2]", "expected a JSON object"),
        (b'{"id": ', None),
        (b'{"id": NaN}', None),
    ],
)
def test_what_does_not_read_natively_is_refused_as_before(data: bytes, reason: str | None) -> None:
    with pytest.raises((ValueError, ValidationError)) as refused:
        parse(delivered(data))
    if reason is not None:
        assert reason in str(refused.value)
