"""Referral follow-through on real NATS and Postgres: the physician's read receipt, escalation of unanswered
referrals by a durable timer (once per deadline, across a restart), what a physician may see, and commands from
anyone without a valid token refused with nothing recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from conftest import declare_as_owner
from support import actors
from support.events import new_patient_id, publish_event, review_task_completed
from support.jetstream import stream_messages, wait_for

from mtm.contracts import (
    AcknowledgeReferral,
    AnswerReferral,
    CommandReply,
    GetReferral,
    ListReferrals,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    ReferralRequested,
)
from mtm.contracts.identity import Actor, bearer
from mtm.contracts.subjects import (
    ACKNOWLEDGE_REFERRAL,
    ANSWER_REFERRAL,
    GET_REFERRAL,
    LIST_REFERRALS,
    PATIENT_EVENTS_STREAM,
    event_filter,
)
from mtm.platform.identity import TokenIssuer, generate_keypair
from mtm.platform.streams import PATIENT_EVENTS
from mtm.referral.bootstrap import ReferralSettings, create_app

pytestmark = pytest.mark.integration


async def on_log(nc, cls) -> list:
    return [
        cls.model_validate_json(m.data) for m in await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(cls))
    ]


async def send(nc, subject: str, body, headers) -> CommandReply:
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def requested(nc, n: int = 1) -> list[ReferralRequested]:
    async def found():
        got = await on_log(nc, ReferralRequested)
        return got if len(got) >= n else None

    return await wait_for(found)


async def test_acknowledge_is_a_read_receipt_for_the_addressed_physician_only(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    async with run_service(create_app(settings_for(ReferralSettings))):
        await publish_event(nc, review_task_completed(new_patient_id(), physician="dr-house"))
        [referral] = await requested(nc)
        rid = referral.data.referral_id
        ack = AcknowledgeReferral(referral_id=rid)
        assert (await send(nc, ACKNOWLEDGE_REFERRAL, ack, actors.physician("dr-who"))).outcome == "conflict"
        assert (await send(nc, ACKNOWLEDGE_REFERRAL, ack, actors.pharmacist("rph-1"))).outcome == "forbidden"
        first = await send(nc, ACKNOWLEDGE_REFERRAL, ack, actors.physician("dr-house"))
        again = await send(nc, ACKNOWLEDGE_REFERRAL, ack, actors.physician("dr-house"))
        assert (first.outcome, again.outcome) == ("accepted", "accepted")
        assert "already" in again.message
        shown = await send(nc, GET_REFERRAL, GetReferral(referral_id=rid), actors.physician("dr-house"))
        assert shown.data["acknowledged_at"] and shown.data["acknowledged_by"] == "dr-house"
        assert shown.data["status"] == "requested"
        # Another physician is told there is no such referral; a pharmacist and an admin see it.
        other = await send(nc, GET_REFERRAL, GetReferral(referral_id=rid), actors.physician("dr-who"))
        assert other.outcome == "not_found"
        assert (await send(nc, GET_REFERRAL, GetReferral(referral_id=rid), actors.pharmacist("rph-1"))).ok
        assert (await send(nc, GET_REFERRAL, GetReferral(referral_id=rid), actors.ADMIN)).ok
    [receipt] = await on_log(nc, ReferralAcknowledged)
    assert receipt.data.actor == Actor(user_id="user-dr-house", role="physician", practitioner_id="dr-house")


async def test_an_unanswered_referral_escalates_once_per_deadline_until_the_last_even_across_a_restart(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    settings = settings_for(
        ReferralSettings,
        referral_respond_within_s=1.0,
        referral_max_escalations=2,
        referral_escalation_check_s=0.05,
    )
    async with run_service(create_app(settings)), run_service(create_app(settings)):
        completed = review_task_completed(new_patient_id(), recommendations=2)
        await publish_event(nc, completed)
        referrals = await requested(nc, 2)
        answered_one = referrals[0].data.referral_id
        answer = AnswerReferral(referral_id=answered_one, decision="accepted")
        assert (await send(nc, ANSWER_REFERRAL, answer, actors.physician("dr-house"))).ok

        async def first_escalation():
            return await on_log(nc, ReferralEscalated) or None

        [first] = await wait_for(first_escalation, timeout_s=15)
    async with run_service(create_app(settings)):

        async def second():
            found = await on_log(nc, ReferralEscalated)
            return found if len(found) >= 2 else None

        await wait_for(second, timeout_s=15)
        await asyncio.sleep(1.5)  # past where a third deadline would have been: there is none after the last
        attention = await send(nc, LIST_REFERRALS, ListReferrals(needs_attention=True), actors.pharmacist("rph-1"))
    escalations = await on_log(nc, ReferralEscalated)
    pending = referrals[1]
    assert [(e.data.referral_id, e.data.escalation) for e in escalations] == [
        (pending.data.referral_id, 1),
        (pending.data.referral_id, 2),
    ]
    assert first.data.respond_by == pending.data.respond_by
    assert escalations[0].data.next_escalation_at == escalations[1].data.respond_by
    assert escalations[1].data.next_escalation_at is None
    assert escalations[0].time >= pending.data.respond_by
    assert [r["referral_id"] for r in attention.data] == [str(pending.data.referral_id)]
    assert attention.data[0]["escalations"] == 2 and attention.data[0]["overdue"]


async def test_a_forged_or_stale_or_wrong_role_command_is_refused_and_records_nothing(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    async with run_service(create_app(settings_for(ReferralSettings))):
        await publish_event(nc, review_task_completed(new_patient_id(), physician="dr-house"))
        [referral] = await requested(nc)
        rid = referral.data.referral_id
        house = Actor(user_id="lee", role="physician", practitioner_id="dr-house")
        expired = actors.ISSUER.issue(house, now=datetime.now(UTC) - timedelta(hours=1))
        forged = TokenIssuer(generate_keypair()[0]).issue(house)
        for command, subject in (
            (AnswerReferral(referral_id=rid, decision="declined"), ANSWER_REFERRAL),
            (AcknowledgeReferral(referral_id=rid), ACKNOWLEDGE_REFERRAL),
        ):
            refused = {
                "no token": await send(nc, subject, command, None),
                "expired": await send(nc, subject, command, bearer(expired)),
                "signed by another key": await send(nc, subject, command, bearer(forged)),
                "a pharmacist": await send(nc, subject, command, actors.pharmacist("rph-1")),
            }
            assert {why: r.outcome for why, r in refused.items()} == {
                "no token": "unauthorized",
                "expired": "unauthorized",
                "signed by another key": "unauthorized",
                "a pharmacist": "forbidden",
            }, subject
        shown = await send(nc, GET_REFERRAL, GetReferral(referral_id=rid), actors.ADMIN)
    assert shown.data["status"] == "requested" and shown.data["acknowledged_at"] is None
    assert await on_log(nc, ReferralAnswered) == [] and await on_log(nc, ReferralAcknowledged) == []
