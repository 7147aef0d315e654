"""The web app's live feed on real NATS: it opens a new patient's events with the key the keeper announced."""

from __future__ import annotations

import asyncio

import pytest
from support.events import new_patient_id, referral_requested

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
