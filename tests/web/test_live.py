"""The web app's live feed on real NATS: it opens a new patient's events with the key the keeper announced, and
forgets an erased patient's key as the services do."""

from __future__ import annotations

import asyncio

import pytest
from support.events import new_patient_id, referral_requested
from support.jetstream import wait_for

from mtm.contracts import EventEnvelope
from mtm.contracts.events import Erasure, PatientErased
from mtm.contracts.subjects import PATIENT_KEYS, PATIENT_KEYS_MADE, event_subject
from mtm.platform.crypto import PatientKey, seal
from mtm.platform.keys import key_reply
from mtm.web.live import LiveFeed

pytestmark = pytest.mark.integration


async def test_the_live_feed_opens_a_new_patients_events_with_the_announced_key_without_asking(infra, nc):
    """No keeper runs: a key request would go unanswered and the change never reach the views. An announcement
    that cannot be read is dropped and the feed goes on hearing the next."""
    asked: list[bytes] = []

    async def on_request(msg) -> None:
        asked.append(msg.data)

    requests = await nc.subscribe(PATIENT_KEYS, cb=on_request)
    web = await infra.nats_client().connect()
    feed = LiveFeed(web)
    await feed.start()
    # The feed's subscriptions reach the server before the events do (they travel on another connection).
    await web.flush()
    try:
        with feed.listen() as changes:
            patient, key = new_patient_id(), PatientKey.new()
            await nc.publish(PATIENT_KEYS_MADE, b'{"keys": "not a map"}')
            await nc.publish(PATIENT_KEYS_MADE, key_reply({patient: key}, set(), ()).model_dump_json().encode())
            referral = referral_requested(patient)
            await nc.publish(event_subject(referral), seal(referral.model_dump_json().encode(), referral.id, key))
            change = await asyncio.wait_for(changes.get(), timeout=10)
        assert change is not None and change.event.id == referral.id
        assert change.referral_id == str(referral.data.referral_id)
        assert asked == []
    finally:
        await feed.stop()
        await web.drain()
        await requests.unsubscribe()


def sealed(event: EventEnvelope, key: PatientKey) -> bytes:
    return seal(event.model_dump_json().encode(), event.id, key)


async def test_the_live_feed_forgets_an_erased_patients_key_even_when_announced_after_the_erasure(infra, nc):
    """As the web app's NATS user, with no keeper running (a key request would go unanswered): after `PatientErased`
    the feed holds no key of the patient, not even one announced after the erasure (an announcement can arrive
    late), their changes still waiting for a stream are dropped and their later events no longer opened; another
    patient's events still are, and no key is asked for."""
    asked: list[bytes] = []

    async def on_request(msg) -> None:
        asked.append(msg.data)

    requests = await nc.subscribe(PATIENT_KEYS, cb=on_request)
    web = await infra.nats_client("web").connect()
    feed = LiveFeed(web)
    await feed.start()
    try:
        with feed.listen() as changes:
            erased, other = new_patient_id(), new_patient_id()
            keys = {erased: PatientKey.new(), other: PatientKey.new()}
            await nc.publish(PATIENT_KEYS_MADE, key_reply({erased: keys[erased]}, set(), ()).model_dump_json().encode())
            before = referral_requested(erased)
            await nc.publish(event_subject(before), sealed(before, keys[erased]))
            # Opened and waiting for the stream, which reads nothing yet.
            await wait_for(lambda: changes.qsize() == 1, timeout_s=10)
            assert await feed.keyring.key(erased) == keys[erased]

            erasure = PatientErased.create(
                source="mtm/reconciliation", patient_id=erased, data=Erasure(patient_id=erased, reason="test")
            )
            await nc.publish(event_subject(erasure), erasure.model_dump_json().encode())
            await wait_for(changes.empty, timeout_s=10)
            assert await feed.keyring.key(erased) is None

            # The keeper's announcement of the erased patient's key, arriving late, with another patient's: the
            # other's event opened shows the announcement was heard.
            await nc.publish(PATIENT_KEYS_MADE, key_reply(keys, set(), ()).model_dump_json().encode())
            first = referral_requested(other)
            await nc.publish(event_subject(first), sealed(first, keys[other]))
            heard = await asyncio.wait_for(changes.get(), timeout=10)
            assert heard is not None and heard.event.id == first.id
            assert await feed.keyring.key(erased) is None

            # Read in the order published (one subscription): the erased patient's event first.
            after, second = referral_requested(erased), referral_requested(other)
            await nc.publish(event_subject(after), sealed(after, keys[erased]))
            await nc.publish(event_subject(second), sealed(second, keys[other]))
            change = await asyncio.wait_for(changes.get(), timeout=10)
        assert change is not None and change.event.id == second.id
        assert asked == []
    finally:
        await feed.stop()
        await web.drain()
        await requests.unsubscribe()
