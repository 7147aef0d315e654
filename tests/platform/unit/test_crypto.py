"""Sealed events open to what was sealed however their tail is written, never when tampered; announced keys are kept."""

from __future__ import annotations

import uuid

import pytest

from mtm.platform.crypto import ErasedPatient, KeyRing, PatientKey, Unreadable, seal, unseal

pytestmark = pytest.mark.unit

CLEAR = b'{"id":"%s","type":"t","patient_id":"p-1","data":{"text":"Warfarin 5 MG Oral Tablet","dose":5}}'


def sealed() -> tuple[bytes, bytes, PatientKey]:
    event_id = uuid.uuid4()
    clear = CLEAR % str(event_id).encode()
    key = PatientKey.new()
    return clear, seal(clear, event_id, key), key


def test_a_sealed_event_opens_to_what_was_sealed():
    clear, body, key = sealed()
    assert b"Warfarin" not in body
    assert unseal(body, key) == clear


def test_a_tail_written_with_json_escapes_or_spacing_opens_too():
    clear, body, key = sealed()
    at = body.rfind(b'"data_base64":"') + len(b'"data_base64":"')
    blob = body[at:-2]
    escaped = body[:at] + blob.replace(b"/", b"\\/").replace(b"+", b"\\u002b") + b'"}'
    spaced = body[:-1] + b" }"
    assert b"\\" in escaped or b"/" not in blob
    assert unseal(escaped, key) == clear
    assert unseal(spaced, key) == clear


def test_tampered_data_or_another_key_never_opens():
    _, body, key = sealed()
    at = body.rfind(b'"data_base64":"') + len(b'"data_base64":"')
    flipped = body[:at] + (b"A" if body[at : at + 1] != b"A" else b"B") + body[at + 1 :]
    for attempt, with_key in ((flipped, key), (body, PatientKey.new()), (body[:-2] + b'\\"}', key)):
        with pytest.raises(Unreadable):
            unseal(attempt, with_key)


async def test_an_announced_key_opens_without_asking_and_an_erased_patients_announcement_is_ignored():
    asked: list[list[str]] = []

    async def source(patient_ids, create):
        asked.append(list(patient_ids))
        return {}, set()

    ring = KeyRing(source)
    clear, body, key = sealed()
    ring.learn({"p-1": key})
    assert await ring.open("p-1", body) == clear
    # An announcement that arrives after the patient's erasure (read from the log) brings nothing back.
    ring.forget("p-2")
    ring.learn({"p-2": PatientKey.new()})
    with pytest.raises(ErasedPatient):
        await ring.open("p-2", body)
    # Nor is it kept to seal with (opening refuses an erased patient whatever the ring holds).
    assert await ring.key("p-2", create=True) is None
    assert asked == []
