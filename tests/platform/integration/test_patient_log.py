"""The patient log as a command appends to it: a decision too large for one message is refused whole."""

from __future__ import annotations

import uuid

import pytest
from conftest import declare_as_owner

from mtm.contracts import EVENTS, ReviewTaskReleased
from mtm.contracts.events import TaskRelease
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM
from mtm.platform.crypto import KeyRing
from mtm.platform.log import PatientLog, TooLargeForTheLog
from mtm.platform.reading import EventReader
from mtm.platform.streams import PATIENT_EVENTS

pytestmark = pytest.mark.integration
PATIENT = "p-too-large"


async def _no_keys(patient_ids, create):
    raise AssertionError("events written in the clear need no key")


def _released(reason_size: int) -> ReviewTaskReleased:
    data = TaskRelease(task_id=uuid.uuid4(), pharmacist_id="rph-ana", reason="r" * reason_size)
    return ReviewTaskReleased.create(source="test", patient_id=PATIENT, data=data)


async def test_a_decision_with_an_event_too_large_for_one_message_appends_nothing(clean_jetstream):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient_log = PatientLog(nc, nc.jetstream(), EventReader(EVENTS, KeyRing(_no_keys)), seal=False)
    # The server's limit as the client learnt it; lowered so a test event can cross it without megabytes.
    nc._max_payload = 64 * 1024

    with pytest.raises(TooLargeForTheLog, match=r"review_task_released is .* bytes as the log stores it"):
        await patient_log.append([_released(100), _released(80 * 1024)], expected_last_seq=0)
    history = await patient_log.read(PATIENT, [ReviewTaskReleased])
    assert history.events == () and history.last_seq == 0  # not even the first event of the decision

    last = await patient_log.append([_released(100), _released(50 * 1024)], expected_last_seq=0)
    assert len((await patient_log.read(PATIENT, [ReviewTaskReleased])).events) == 2
    assert last == (await nc.jetstream().stream_info(PATIENT_EVENTS_STREAM)).state.last_seq
