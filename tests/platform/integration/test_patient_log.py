"""The patient log as a command appends to it: a decision larger than one message lands whole, its large events
kept in the log's object store and read back through a reference; only what even that cannot keep is refused."""

from __future__ import annotations

import uuid

import pytest
from conftest import declare_as_owner

from mtm.contracts import EVENTS, ReviewTaskReleased
from mtm.contracts.events import TaskRelease
from mtm.contracts.subjects import PATIENT_EVENT_BODIES_BUCKET, PATIENT_EVENTS_STREAM, event_subject
from mtm.platform.bodies import REFERENCE_MARKER, BodyReference, EventBodies, MalformedReference, StoredBodyMissing
from mtm.platform.crypto import KeyRing, PatientKey
from mtm.platform.faults import is_transient
from mtm.platform.log import ConcurrencyConflict, PatientLog, TooLargeForTheLog
from mtm.platform.outbox import MSG_ID_HEADER
from mtm.platform.reading import EventReader
from mtm.platform.streams import PATIENT_EVENTS

pytestmark = pytest.mark.integration
PATIENT = "p-too-large"
# The server's limit as the client learns it, lowered so a test event can cross it without megabytes.
TEST_MAX_PAYLOAD = 64 * 1024


async def _no_keys(patient_ids, create):
    raise AssertionError("events written in the clear need no key")


def _keys():
    """A key keeper in memory: one key per patient, made on first use."""
    kept: dict[str, PatientKey] = {}

    async def source(patient_ids, create):
        if create:
            for patient_id in patient_ids:
                kept.setdefault(patient_id, PatientKey.new())
        return {p: kept[p] for p in patient_ids if p in kept}, set()

    return source


def _released(reason_size: int, reason: str = "r") -> ReviewTaskReleased:
    data = TaskRelease(task_id=uuid.uuid4(), pharmacist_id="rph-ana", reason=reason * reason_size)
    return ReviewTaskReleased.create(source="test", patient_id=PATIENT, data=data)


def _log(nc, *, seal: bool) -> PatientLog:
    keyring = KeyRing(_keys() if seal else _no_keys)
    return PatientLog(nc, nc.jetstream(), EventReader(EVENTS, keyring, EventBodies(nc)), seal=seal)


async def _stored(nc) -> list[tuple[str, bytes]]:
    js = nc.jetstream()
    last = (await js.stream_info(PATIENT_EVENTS_STREAM)).state.last_seq
    found = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(PATIENT_EVENTS_STREAM, seq=seq)
        found.append((msg.subject, msg.data))
    return found


@pytest.mark.parametrize("seal", [False, True], ids=["clear", "sealed"])
async def test_a_decision_with_events_larger_than_one_message_lands_whole_and_reads_back_equal(clean_jetstream, seal):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient_log = _log(nc, seal=seal)
    nc._max_payload = TEST_MAX_PAYLOAD
    # Multi-byte text: the limits count characters, the log bytes.
    decided = [_released(100), _released(30 * 1024, "é"), _released(200 * 1024, "ß")]

    last = await patient_log.append(decided, expected_last_seq=0)

    history = await patient_log.read(PATIENT, [ReviewTaskReleased])
    assert [e.event for e in history.events] == decided
    assert last == history.last_seq == 3
    stored = await _stored(nc)
    # What one message could carry went as it was; the larger ones are references, each a few hundred bytes.
    assert not stored[0][1].startswith(REFERENCE_MARKER)
    references = [BodyReference.of(body) for _, body in stored[1:]]
    assert all(r is not None and r.bucket == PATIENT_EVENT_BODIES_BUCKET for r in references)
    assert all(len(body) < 1024 for _, body in stored[1:])
    # The store keeps the event as the log would have: sealed when sealing is on (no clear text in it).
    kept = [await EventBodies(nc).fetch(r) for r in references if r is not None]
    assert [("ß" * 1000).encode() in body for body in kept[1:]] == [not seal]
    assert [b'"datakey"' in body for body in kept] == [seal, seal]


async def test_a_retried_append_refers_to_the_object_it_stored_and_a_conflict_leaves_only_an_orphan(clean_jetstream):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient_log = _log(nc, seal=True)
    nc._max_payload = TEST_MAX_PAYLOAD
    first = _released(100)
    await patient_log.append([first], expected_last_seq=0)
    large = _released(100 * 1024)

    with pytest.raises(ConcurrencyConflict):
        await patient_log.append([large], expected_last_seq=0)  # decided on a history that moved on
    assert len(await _stored(nc)) == 1  # its body was stored first; no entry on the log names it
    await patient_log.append([large], expected_last_seq=1)  # sealed again: another nonce, another object

    history = await patient_log.read(PATIENT, [ReviewTaskReleased])
    assert [e.event for e in history.events] == [first, large]
    bucket = await nc.jetstream().object_store(PATIENT_EVENT_BODIES_BUCKET)
    assert len(await bucket.list()) == 2


async def test_only_a_decision_larger_than_the_object_store_keeps_for_one_event_is_refused(
    clean_jetstream, monkeypatch
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient_log = _log(nc, seal=False)
    nc._max_payload = TEST_MAX_PAYLOAD
    monkeypatch.setattr("mtm.platform.log.MAX_STORED_BODY_BYTES", 150 * 1024)

    with pytest.raises(TooLargeForTheLog, match=r"review_task_released is .* bytes as the log stores it"):
        await patient_log.append([_released(100), _released(80 * 1024), _released(160 * 1024)], expected_last_seq=0)
    history = await patient_log.read(PATIENT, [ReviewTaskReleased])
    assert history.events == () and history.last_seq == 0  # not even the first event of the decision


async def test_a_stored_body_missing_or_changed_is_an_outage_and_a_malformed_reference_is_invalid(clean_jetstream):
    nc = clean_jetstream
    js = nc.jetstream()
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient_log = _log(nc, seal=False)
    nc._max_payload = TEST_MAX_PAYLOAD
    await patient_log.append([_released(100 * 1024)], expected_last_seq=0)
    [(subject, body)] = await _stored(nc)
    reference = BodyReference.of(body)
    assert reference is not None
    reader = EventReader(EVENTS, KeyRing(_no_keys), EventBodies(nc))
    bucket = await js.object_store(PATIENT_EVENT_BODIES_BUCKET)

    # Tampered: other bytes under the object's name (the store's own digest agrees with them, the reference not).
    await bucket.put(reference.object, b'{"id":"tampered"}')
    with pytest.raises(StoredBodyMissing) as changed:
        await reader.read(subject, body)
    assert is_transient(changed.value)  # held and retried by every consumer, never parked or skipped
    await bucket.delete(reference.object)
    with pytest.raises(StoredBodyMissing):
        await reader.read(subject, body)

    with pytest.raises(MalformedReference):
        await reader.read(subject, REFERENCE_MARKER + b'{"bucket": 1}')
    assert not is_transient(MalformedReference("x"))


class _InterleavingJetStream:
    """JetStream as a command's append sees it while another service relays: right after the decision's first
    event is stored, `other` reaches the same patient's log."""

    def __init__(self, js, other) -> None:
        self._js = js
        self._other = other

    async def publish(self, subject, payload, **kwargs):
        ack = await self._js.publish(subject, payload, **kwargs)
        if self._other is not None:
            other, self._other = self._other, None
            await self._js.publish(
                event_subject(other), other.model_dump_json().encode(), headers={MSG_ID_HEADER: str(other.id)}
            )
        return ack

    def __getattr__(self, name):
        return getattr(self._js, name)


async def test_a_decision_whose_first_event_is_stored_lands_whole_when_another_event_comes_in_between(
    clean_jetstream,
):
    """Regression: a completion and its follow-up, with the program's adherence measure for the same patient relayed
    between them. The follow-up was refused as a conflict, so the command decided again, found its own completion
    and answered "task is already completed", the follow-up never recorded."""
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    reader = EventReader(EVENTS, KeyRing(_no_keys), EventBodies(nc))
    completed, follow_up, relayed = _released(1), _released(1), _released(1)
    patient_log = PatientLog(nc, _InterleavingJetStream(nc.jetstream(), relayed), reader, seal=False)

    assert await patient_log.append([completed, follow_up], expected_last_seq=0) == 3

    history = await patient_log.read(PATIENT, [ReviewTaskReleased])
    assert [e.event for e in history.events] == [completed, relayed, follow_up]
    with pytest.raises(ConcurrencyConflict):  # a decision on a history that moved on is still refused whole
        await patient_log.append([_released(1), _released(1)], expected_last_seq=1)
    assert len(await _stored(nc)) == 3
