"""Commands on real NATS and Postgres: decided on the log with optimistic concurrency, and only for a verified actor."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from conftest import declare_as_owner
from cryptography.hazmat.primitives import serialization
from support import actors
from support.events import medications_reconciled, new_patient_id, publish_event
from support.jetstream import Collector, stream_messages, wait_for

from mtm.contracts import ClaimReviewTask, CommandReply, ReviewTaskClaimed, ReviewTaskCreated
from mtm.contracts.identity import Actor, bearer
from mtm.contracts.subjects import CLAIM_REVIEW_TASK, PATIENT_EVENTS_STREAM, event_filter
from mtm.platform.log import PatientLog
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review.bootstrap import create_app
from mtm.review.settings import ReviewSettings

pytestmark = pytest.mark.integration


def no_alerts(rec):
    return [], "routine"


async def claim(nc, task_id: uuid.UUID, headers: dict[str, str] | None) -> CommandReply:
    body = ClaimReviewTask(task_id=task_id).model_dump_json().encode()
    reply = await nc.request(CLAIM_REVIEW_TASK, body, timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def open_task(nc, tool: Collector) -> uuid.UUID:
    await publish_event(nc, medications_reconciled(new_patient_id()))
    await wait_for(lambda: tool.messages)
    return ReviewTaskCreated.model_validate_json(tool.messages[-1].data).data.task_id


async def claims_in_log(nc) -> list[ReviewTaskClaimed]:
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskClaimed))
    return [ReviewTaskClaimed.model_validate_json(m.data) for m in found]


async def test_two_replicas_deciding_on_the_same_history_append_exactly_one_claim(
    clean_jetstream, settings_for, run_service, monkeypatch
):
    """Both replicas read the task as unclaimed before either appends: the log's OCC lets exactly one through."""
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    tool = await Collector().start(nc, event_filter(ReviewTaskCreated))
    settings = settings_for(ReviewSettings)
    first, second = create_app(settings, checker=no_alerts), create_app(settings, checker=no_alerts)
    read = PatientLog.read
    racing = asyncio.Barrier(2)
    reads: list[int] = []

    async def read_together(self, patient_id, types):
        history = await read(self, patient_id, types)
        reads.append(history.last_seq)
        if len(reads) <= 2:
            await racing.wait()  # the first two decisions are made on the same history
        return history

    monkeypatch.setattr(PatientLog, "read", read_together)
    async with run_service(first), run_service(second):
        task_id = await open_task(nc, tool)
        winner, loser = await asyncio.gather(
            first.runtime.execute(_claim_command(first), ClaimReviewTask(task_id=task_id), _pharmacist("rph-a")),
            second.runtime.execute(_claim_command(second), ClaimReviewTask(task_id=task_id), _pharmacist("rph-b")),
        )
    await tool.stop()
    outcomes = sorted([winner.outcome, loser.outcome])
    assert outcomes == ["accepted", "conflict"], (winner, loser)
    assert reads[0] == reads[1], "both decisions were made on the same history"
    assert len(reads) == 3, "the loser read the log again after its append was refused, then said conflict"
    claimed = await claims_in_log(nc)
    assert len(claimed) == 1
    assert claimed[0].data.actor is not None and claimed[0].data.pharmacist_id in ("rph-a", "rph-b")


def _claim_command(app):
    return next(c for c in app.runtime.definition.handlers.commands if c.subject == CLAIM_REVIEW_TASK)


def _pharmacist(practitioner_id: str) -> Actor:
    return Actor(user_id=practitioner_id, role="pharmacist", practitioner_id=practitioner_id)


async def test_only_a_verified_pharmacist_can_claim_and_refusals_record_nothing(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    tool = await Collector().start(nc, event_filter(ReviewTaskCreated))
    async with run_service(create_app(settings_for(ReviewSettings), checker=no_alerts)):
        task_id = await open_task(nc, tool)
        expired = actors.ISSUER.issue(
            Actor(user_id="ana", role="pharmacist"), now=datetime.now(UTC) - timedelta(hours=1)
        )
        from mtm.platform.identity import TokenIssuer, generate_keypair

        forged = TokenIssuer(generate_keypair()[0]).issue(Actor(user_id="mallory", role="pharmacist"))
        # Signed by the trusted key, but the practitioner id would make every projection that keeps who acted
        # fail on the event (Postgres text takes no NUL): found by the fault suite's hostile actors.
        nul = jwt.encode(
            {
                **jwt.decode(actors.token("ana", "pharmacist"), options={"verify_signature": False}),
                "practitioner_id": "r\x00h",
            },
            serialization.load_pem_private_key(actors.PRIVATE_KEY.encode(), password=None),
            algorithm="EdDSA",
        )
        refused = {
            "no token": await claim(nc, task_id, None),
            "not a bearer token": await claim(nc, task_id, {"Authorization": "mallory-not-a-pharmacist"}),
            "expired": await claim(nc, task_id, bearer(expired)),
            "signed by another key": await claim(nc, task_id, bearer(forged)),
            "a physician": await claim(nc, task_id, actors.physician("dr-house")),
            "a practitioner id with NUL": await claim(nc, task_id, bearer(nul)),
        }
        assert {why: reply.outcome for why, reply in refused.items()} == {
            "no token": "unauthorized",
            "not a bearer token": "unauthorized",
            "expired": "unauthorized",
            "signed by another key": "unauthorized",
            "a physician": "forbidden",
            "a practitioner id with NUL": "unauthorized",
        }
        assert "expired" in refused["expired"].message
        assert await claims_in_log(nc) == []
        accepted = await claim(nc, task_id, actors.pharmacist("rph-ana"))
        assert accepted.ok
        claimed = await wait_for(lambda: claims_in_log(nc))
    await tool.stop()
    assert claimed[0].data.actor == Actor(user_id="rph-ana", role="pharmacist", practitioner_id="rph-ana")
