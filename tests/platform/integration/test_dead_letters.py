"""Reading and redriving a service's dead letters on real JetStream: pages, bodies from the object store, redrives
of the original and of a corrected body, each recorded; events of the patient log are never edited."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from conftest import declare_as_owner

from mtm.contracts import DeadLetter
from mtm.contracts.dead_letter import GetDeadLetter, ListDeadLetters, RedriveDeadLetter, dead_letter_bucket
from mtm.contracts.identity import Actor
from mtm.contracts.subjects import dead_letter_subject, patient_subject
from mtm.platform.dead_letters import REDRIVEN_FROM_HEADER, DeadLetters
from mtm.platform.streams import StreamSpec, dead_letter_stream, declare_dead_letter_bodies

pytestmark = pytest.mark.integration
SERVICE = "letters"
ADMIN = Actor(user_id="ops", role="admin")
TARGET = StreamSpec(name="LETTERS_TARGET", subjects=("letters.target.>",), owner=SERVICE, description="redrives land")


async def park(js, subject: str, body: bytes, *, in_store: bool = False) -> int:
    """A letter as `BatchProcessor._park` publishes it (a large body in the object store)."""
    letter = DeadLetter.of(
        payload=body,
        parked_at=datetime.now(UTC),
        service=SERVICE,
        consumer="letters-consumer",
        original_subject=subject,
        original_stream=TARGET.name,
        original_sequence=1,
        original_headers={"Nats-Msg-Id": "first-send", "traceparent": "00-abc-def-01"},
        reason="body: not valid JSON",
    )
    if in_store:
        name = f"letter_{uuid.uuid4().hex}"
        await (await js.object_store(dead_letter_bucket(SERVICE))).put(name, body)
        letter = letter.without_body(name)
    ack = await js.publish(dead_letter_subject(SERVICE, "letters-consumer"), letter.model_dump_json().encode())
    return ack.seq


async def test_letters_are_paged_read_and_redriven_once_unless_asked_again(clean_jetstream) -> None:
    js = clean_jetstream.jetstream()
    await declare_as_owner(clean_jetstream, dead_letter_stream(SERVICE), TARGET)
    await declare_dead_letter_bodies(js, SERVICE, replicas=1)
    letters = DeadLetters(js, SERVICE)
    large = b"x" * 700_000
    first = await park(js, "letters.target.a", b"{not json")
    second = await park(js, "letters.target.b", large, in_store=True)
    third = await park(js, "letters.target.c", b"[]")

    page = await letters.list(ListDeadLetters(limit=2), ADMIN)
    assert [x["sequence"] for x in page.data["letters"]] == [first, second]
    assert page.data["next_after"] == second and "body_base64" not in page.data["letters"][0]
    rest = await letters.list(ListDeadLetters(after_sequence=second), ADMIN)
    assert [x["sequence"] for x in rest.data["letters"]] == [third] and rest.data["next_after"] is None

    chunk = await letters.get(GetDeadLetter(sequence=second, body_offset=100, body_limit=10), ADMIN)
    assert chunk.data["body_size"] == len(large) and base64.b64decode(chunk.data["body_base64"]) == b"x" * 10
    assert (await letters.get(GetDeadLetter(sequence=9999), ADMIN)).outcome == "not_found"

    original = await letters.redrive(RedriveDeadLetter(sequence=second), ADMIN)
    assert original.outcome == "accepted", original
    sent = await js.get_msg(TARGET.name, seq=original.data["published_sequence"])
    assert sent.data == large and sent.subject == "letters.target.b"
    assert sent.headers["traceparent"] == "00-abc-def-01" and sent.headers["Nats-Msg-Id"] != "first-send"
    assert sent.headers[REDRIVEN_FROM_HEADER] == f"DEAD_LETTERS_LETTERS/{second}"

    twice = await letters.redrive(RedriveDeadLetter(sequence=second), ADMIN)
    assert twice.outcome == "conflict"
    corrected = RedriveDeadLetter(sequence=second, payload_base64=base64.b64encode(b'{"ok": 1}').decode(), again=True)
    again = await letters.redrive(corrected, ADMIN)
    assert again.outcome == "accepted" and again.data["edited"]
    assert (await js.get_msg(TARGET.name, seq=again.data["published_sequence"])).data == b'{"ok": 1}'

    listed = {x["sequence"]: x for x in (await letters.list(ListDeadLetters(), ADMIN)).data["letters"]}
    assert listed[second]["redriven"]["edited"] and listed[second]["redriven"]["by"] == "ops"
    assert listed[first]["redriven"] is None and len(listed) == 3  # records are not letters


async def test_a_letter_whose_stored_body_expired_is_not_found_rather_than_an_error(clean_jetstream) -> None:
    js = clean_jetstream.jetstream()
    await declare_as_owner(clean_jetstream, dead_letter_stream(SERVICE), TARGET)
    await declare_dead_letter_bodies(js, SERVICE, replicas=1)
    letters = DeadLetters(js, SERVICE)
    sequence = await park(js, "letters.target.a", b"y" * 700_000, in_store=True)
    # What the object store's age limit does to a body, done at once: the letter outlives it for a moment.
    stored = await letters._letter(sequence)
    assert stored is not None and stored.payload_object is not None
    await (await js.object_store(dead_letter_bucket(SERVICE))).delete(stored.payload_object)

    read = await letters.get(GetDeadLetter(sequence=sequence), ADMIN)
    assert read.outcome == "not_found" and "no longer kept" in read.message
    redriven = await letters.redrive(RedriveDeadLetter(sequence=sequence), ADMIN)
    assert redriven.outcome == "not_found"
    assert (await letters.list(ListDeadLetters(), ADMIN)).data["letters"][0]["redriven"] is None


async def test_an_event_of_the_patient_log_is_redriven_as_it_was_never_edited(clean_jetstream) -> None:
    js = clean_jetstream.jetstream()
    await declare_as_owner(clean_jetstream, dead_letter_stream(SERVICE))
    letters = DeadLetters(js, SERVICE)
    sequence = await park(js, patient_subject("p1", "review_task_created"), b"{}")
    edited = RedriveDeadLetter(sequence=sequence, payload_base64=base64.b64encode(b"{}").decode())
    refused = await letters.redrive(edited, ADMIN)
    assert refused.outcome == "invalid" and "never edited" in refused.message
    assert (await letters.list(ListDeadLetters(), ADMIN)).data["letters"][0]["redriven"] is None
