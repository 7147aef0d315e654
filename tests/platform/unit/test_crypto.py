"""Sealed event bodies: what `seal` writes opens again, reordered JSON too, and a tampered blob never does."""

from __future__ import annotations

import json
import uuid

import pytest

from mtm.platform.crypto import PatientKey, Unreadable, seal, unseal

pytestmark = pytest.mark.unit

EVENT_ID = uuid.UUID("6f1c2b9e-1d2a-4c5b-9e8f-0a1b2c3d4e5f")
CLEAR = json.dumps(
    {"id": str(EVENT_ID), "type": "x", "data": {"note": 'a "quoted" word', "n": [1, 2]}}, separators=(",", ":")
).encode()


def test_a_sealed_body_opens_to_the_clear_json() -> None:
    key = PatientKey.new()
    assert unseal(seal(CLEAR, EVENT_ID, key), key) == CLEAR


def test_a_body_not_in_seal_order_is_parsed_and_opens() -> None:
    key = PatientKey.new()
    sealed = json.loads(seal(CLEAR, EVENT_ID, key))
    reordered = sealed | {"written_by": "another writer"}  # a field after the blob
    opened = json.loads(unseal(json.dumps(reordered, separators=(",", ":")).encode(), key))
    assert opened["data"] == json.loads(CLEAR)["data"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body: body[:-8] + (b"A" if body[-8:-7] != b"A" else b"B") + body[-7:],  # a changed ciphertext byte
        lambda body: body[:-2] + b'\\"}',  # an escape where base64 has none
        lambda body: body.replace(str(EVENT_ID).encode(), str(uuid.uuid4()).encode(), 1),  # another event's id
    ],
)
def test_a_tampered_body_is_unreadable(tamper: object) -> None:
    key = PatientKey.new()
    with pytest.raises(Unreadable):
        unseal(tamper(seal(CLEAR, EVENT_ID, key)), key)  # type: ignore[operator]


def test_another_key_cannot_open_it() -> None:
    with pytest.raises(Unreadable):
        unseal(seal(CLEAR, EVENT_ID, PatientKey.new()), PatientKey.new())
