"""Referral service on real NATS JetStream and Postgres: exactly-once effect, redelivery, dead letters, answers."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
from conftest import declare_as_owner
from support import actors
from support.events import new_patient_id, publish_event, review_task_completed
from support.jetstream import stream_messages, wait_for

from mtm.contracts import AnswerReferral, CommandReply, DeadLetter, ReferralAnswered, ReferralRequested
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    PATIENT_EVENTS_STREAM,
    dead_letter_stream,
    event_filter,
    patient_subject,
)
from mtm.platform.consumer import BatchProcessor
from mtm.platform.streams import PATIENT_EVENTS
from mtm.referral.bootstrap import ReferralSettings, create_app

pytestmark = pytest.mark.integration


async def referrals_requested(nc) -> list[ReferralRequested]:
    msgs = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReferralRequested))
    return [ReferralRequested.model_validate_json(m.data) for m in msgs]


async def test_each_recommendation_for_the_prescriber_becomes_one_referral(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    completed = review_task_completed(new_patient_id(), recommendations=2)
    async with run_service(create_app(settings_for(ReferralSettings))):
        await publish_event(nc, completed)
        found = await wait_for(lambda: _count_at_least(nc, 2))
    assert {r.data.physician_id for r in found} == {"dr-house"}
    assert {r.data.recommendation.recommendation_id for r in found} == {
        r.recommendation_id for r in completed.data.recommendations if r.needs_prescriber
    }
    assert all(r.causation_id == completed.id and r.correlation_id == completed.correlation_id for r in found)


async def test_a_recommendation_id_reused_on_another_task_is_another_referral(
    clean_jetstream, settings_for, run_service
):
    """Regression: referral ids were derived from the recommendation id alone, so a second task reusing one (a
    client that numbers its recommendations) was taken for a resend of the first, and its referral never sent."""
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    first = review_task_completed(new_patient_id())
    reused = first.data.recommendations[0]
    second = review_task_completed(new_patient_id())
    second = second.model_copy(update={"data": second.data.model_copy(update={"recommendations": (reused,)})})
    async with run_service(create_app(settings_for(ReferralSettings))):
        await publish_event(nc, first)
        await publish_event(nc, second)
        found = await wait_for(lambda: _count_at_least(nc, 2))
    assert {r.data.task_id for r in found} == {first.data.task_id, second.data.task_id}
    assert len({r.data.referral_id for r in found}) == 2
    assert {r.data.recommendation.recommendation_id for r in found} == {reused.recommendation_id}


async def _count_at_least(nc, n: int) -> list[ReferralRequested] | None:
    found = await referrals_requested(nc)
    return found if len(found) >= n else None


async def test_a_redelivered_message_is_applied_once(clean_jetstream, settings_for, run_service, monkeypatch):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    original_ack_all = BatchProcessor._ack_all
    dropped: list[int] = []

    async def lose_first_ack(deliveries):
        # The projection committed but the ack never reached the server: JetStream must redeliver.
        if deliveries and not dropped:
            dropped.extend(d.stream_seq for d in deliveries)
            return
        await original_ack_all(deliveries)

    monkeypatch.setattr(BatchProcessor, "_ack_all", staticmethod(lose_first_ack))
    app = create_app(settings_for(ReferralSettings, ack_wait_s=1.0))
    async with run_service(app):
        await publish_event(nc, review_task_completed(new_patient_id()))
        processor = app.runtime.processors["referral-review-task-completed"]
        await wait_for(lambda: dropped)
        info = await wait_for(lambda: _redelivered(nc), timeout_s=15)
        assert info.num_ack_pending == 0
        assert processor.applied == 1
    assert len(await referrals_requested(nc)) == 1


async def _redelivered(nc):
    info = await nc.jetstream().consumer_info(PATIENT_EVENTS_STREAM, "referral-review-task-completed")
    return info if info.num_redelivered == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0 else None


async def test_a_failing_handler_leads_to_redelivery_not_loss(clean_jetstream, settings_for, run_service, monkeypatch):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    failures = []
    app = create_app(settings_for(ReferralSettings))
    async with run_service(app):
        processor = app.runtime.processors["referral-review-task-completed"]
        real_apply = processor.consumer.apply

        async def flaky_apply(conn, batch):
            if len(failures) < 2:
                failures.append(len(batch))
                raise ConnectionError("database went away")
            return await real_apply(conn, batch)

        processor.consumer = dataclasses.replace(processor.consumer, apply=flaky_apply)
        await publish_event(nc, review_task_completed(new_patient_id()))
        found = await wait_for(lambda: _count_at_least(nc, 1), timeout_s=20)
    assert len(failures) == 2
    assert len(found) == 1


async def test_a_malformed_message_is_dead_lettered_and_the_next_one_flows(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient = new_patient_id()
    bad = review_task_completed(patient).model_dump(mode="json")
    bad["data"]["task_id"] = "not-a-uuid"
    unroutable = review_task_completed(new_patient_id(), physician=None)
    good = review_task_completed(new_patient_id())
    async with run_service(create_app(settings_for(ReferralSettings))):
        js = nc.jetstream()
        await js.publish(patient_subject(patient, "review_task_completed"), json.dumps(bad).encode())
        await js.publish(patient_subject(patient, "review_task_completed"), b"{not json")
        await publish_event(nc, unroutable)
        await publish_event(nc, good)
        found = await wait_for(lambda: _count_at_least(nc, 1))
        letters = await wait_for(lambda: _dead_letters(nc, 3))
    assert [r.causation_id for r in found] == [good.id]
    reasons = [letter.reason for letter in letters]
    assert "data.task_id" in reasons[0] and "UUID" in reasons[0]
    assert reasons[1].startswith("body: not valid JSON")
    assert "data.care_team" in reasons[2]
    assert letters[1].payload == b"{not json"
    assert all(letter.original_subject.endswith("review_task_completed.v1") for letter in letters)


async def _dead_letters(nc, n: int) -> list[DeadLetter] | None:
    msgs = await stream_messages(nc, dead_letter_stream("referral"))
    return [DeadLetter.model_validate_json(m.data) for m in msgs] if len(msgs) >= n else None


async def test_answers_go_to_the_addressed_physician_once(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    async with run_service(create_app(settings_for(ReferralSettings))):
        await publish_event(nc, review_task_completed(new_patient_id()))
        (referral,) = await wait_for(lambda: _count_at_least(nc, 1))
        rid = referral.data.referral_id

        async def answer(physician: str = "dr-house", **kwargs) -> CommandReply:
            command = AnswerReferral(**{"referral_id": rid, "decision": "accepted", **kwargs})
            reply = await nc.request(
                ANSWER_REFERRAL, command.model_dump_json().encode(), timeout=5, headers=actors.physician(physician)
            )
            return CommandReply.model_validate_json(reply.data)

        assert (await answer(referral_id=uuid.uuid4())).outcome == "not_found"
        assert (await answer(physician="dr-who")).outcome == "conflict"
        assert (await answer()).outcome == "accepted"
        assert (await answer()).outcome == "accepted"  # a retried command is idempotent
        assert (await answer(decision="declined")).outcome == "conflict"
        invalid = await nc.request(
            ANSWER_REFERRAL, b'{"referral_id": "x"}', timeout=5, headers=actors.physician("dr-house")
        )
        reply = CommandReply.model_validate_json(invalid.data)
        assert reply.outcome == "invalid" and "referral_id" in reply.message
        answered = await wait_for(lambda: _answered(nc))
    assert len(answered) == 1


async def _answered(nc):
    return await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReferralAnswered))
