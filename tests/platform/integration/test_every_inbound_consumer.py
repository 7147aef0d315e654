"""Every inbound consumer on real NATS and Postgres: applied once, redelivered on failure, bad input parked."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import declare_as_owner
from support.jetstream import stream_messages, wait_for
from support.services import INBOUND_CASES, InboundCase, new_patient_id

from mtm.contracts import DeadLetter
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, dead_letter_stream, event_filter
from mtm.platform.consumer import BatchProcessor

pytestmark = pytest.mark.integration
cases = pytest.mark.parametrize("case", INBOUND_CASES, ids=str)


def app_for(case: InboundCase, settings_for, **overrides):
    return case.create_app(settings_for(case.settings(), **{**case.extra_settings, **overrides}))


async def publish_good(nc, case: InboundCase) -> str:
    subject, payload, msg_id = case.good(new_patient_id())
    await nc.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
    return msg_id


async def outputs(nc, case: InboundCase, at_least: int = 1):
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(case.output))
    return found if len(found) >= at_least else None


@cases
async def test_a_message_delivered_twice_is_applied_once(case, clean_jetstream, settings_for, run_service, monkeypatch):
    nc = clean_jetstream
    await declare_as_owner(nc, *case.streams)
    original = BatchProcessor._ack_all
    lost: list[int] = []

    async def lose_first_ack(deliveries):
        # Committed, but the ack never reaches the server: JetStream delivers the message again.
        if deliveries and not lost and deliveries[0].raw.metadata.consumer == case.durable:
            lost.extend(d.stream_seq for d in deliveries)
            return
        await original(deliveries)

    monkeypatch.setattr(BatchProcessor, "_ack_all", staticmethod(lose_first_ack))
    app = app_for(case, settings_for, ack_wait_s=1.0)
    async with run_service(app):
        await publish_good(nc, case)
        await wait_for(lambda: lost)
        processor = app.runtime.processors[case.durable]
        await wait_for(lambda: _delivered_twice(nc, case), timeout_s=15)
        await wait_for(lambda: outputs(nc, case, case.outputs_per_input))
        assert processor.applied == 1
    assert len(await outputs(nc, case)) == case.outputs_per_input


async def _delivered_twice(nc, case: InboundCase):
    info = await nc.jetstream().consumer_info(case.stream, case.durable)
    return info.num_ack_pending == 0 and info.delivered.consumer_seq >= 2


@cases
async def test_a_failing_handler_leads_to_redelivery_not_loss(case, clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, *case.streams)
    failures: list[int] = []
    app = app_for(case, settings_for)
    async with run_service(app):
        processor = app.runtime.processors[case.durable]
        real_apply = processor.consumer.apply

        async def flaky_apply(conn, batch):
            if len(failures) < 2:
                failures.append(len(batch))
                raise ConnectionError("database went away")
            await real_apply(conn, batch)

        processor.consumer = dataclasses.replace(processor.consumer, apply=flaky_apply)
        await publish_good(nc, case)
        await wait_for(lambda: outputs(nc, case, case.outputs_per_input), timeout_s=20)
    assert len(failures) == 2
    assert len(await outputs(nc, case)) == case.outputs_per_input


@cases
async def test_a_malformed_message_is_dead_lettered_and_the_next_flows(
    case, clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, *case.streams)
    patient = new_patient_id()
    async with run_service(app_for(case, settings_for)):
        js = nc.jetstream()
        await js.publish(case.bad_subject(patient), b'{"id": "not-a-uuid", "data": {}}')
        await publish_good(nc, case)
        await wait_for(lambda: outputs(nc, case, case.outputs_per_input))
        letters = await wait_for(lambda: stream_messages(nc, dead_letter_stream(case.service)))
    letter = DeadLetter.model_validate_json(letters[0].data)
    assert letter.consumer == case.durable
    assert letter.payload == b'{"id": "not-a-uuid", "data": {}}'
    assert letter.original_subject == case.bad_subject(patient)
    assert "id:" in letter.reason or "data" in letter.reason, letter.reason
    assert len(letters) == 1
