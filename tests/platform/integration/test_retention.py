"""What the streams keep: the patient log for ever, raw intake and dead letters (raw PHI) for the set period."""

from __future__ import annotations

import pytest
from support.jetstream import stream_messages, wait_for

from mtm.contracts.dead_letter import dead_letter_bucket
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_STREAM,
    DISCHARGE_INTAKE_SUBJECT,
    FILL_INTAKE_STREAM,
    PATIENT_EVENT_BODIES_STREAM,
    PATIENT_EVENTS_STREAM,
    dead_letter_stream,
)

pytestmark = pytest.mark.integration


async def test_raw_intake_and_dead_letters_expire_the_log_never_does(clean_jetstream, settings_for, run_service):
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    nc = clean_jetstream
    js = nc.jetstream()
    settings = settings_for(ReconciliationSettings, intake_max_age_s=1.0, dead_letter_max_age_s=2.0)
    async with run_service(create_app(settings)):
        for stream in (DISCHARGE_INTAKE_STREAM, FILL_INTAKE_STREAM):
            config = (await js.stream_info(stream)).config
            assert config.max_age == 1.0 and config.duplicate_window <= 1.0
        assert (await js.stream_info(dead_letter_stream("reconciliation"))).config.max_age == 2.0
        assert (await js.stream_info(PATIENT_EVENTS_STREAM)).config.max_age in (0, None)
        # The log's object store (events too large for one message) is kept as long as the log.
        log_bodies = (await js.stream_info(PATIENT_EVENT_BODIES_STREAM)).config
        assert log_bodies.max_age in (0, None) and log_bodies.deny_delete
        bodies = await js.object_store(dead_letter_bucket("reconciliation"))
        assert (await bodies.status()).ttl == 2.0

        # A discharge that can never be read: parked with its reason, then gone from intake and dead letters.
        await js.publish(DISCHARGE_INTAKE_SUBJECT, b'{"not": "a discharge"}')
        await wait_for(lambda: stream_messages(nc, dead_letter_stream("reconciliation")), timeout_s=20)

        async def expired() -> bool:
            intake = (await js.stream_info(DISCHARGE_INTAKE_STREAM)).state.messages
            letters = (await js.stream_info(dead_letter_stream("reconciliation"))).state.messages
            return intake == 0 and letters == 0

        await wait_for(expired, timeout_s=30)


async def test_a_longer_retention_set_later_reaches_existing_streams(
    clean_jetstream, settings_for, run_service, caplog
):
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    js = clean_jetstream.jetstream()
    async with run_service(create_app(settings_for(ReconciliationSettings, dead_letter_max_age_s=60.0))):
        pass
    async with run_service(create_app(settings_for(ReconciliationSettings, dead_letter_max_age_s=3600.0))):
        assert (await js.stream_info(dead_letter_stream("reconciliation"))).config.max_age == 3600.0
        bodies = await js.object_store(dead_letter_bucket("reconciliation"))
        assert (await bodies.status()).ttl == 3600.0
    # What is kept for ever (the log and its object store) was declared again as it was: nothing to update.
    assert not [r for r in caplog.records if "configuration differs" in r.getMessage()]
