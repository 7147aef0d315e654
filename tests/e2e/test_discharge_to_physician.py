"""End to end across the four service processes: a discharge reaches the physician once, even through kill -9."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import nats
import pytest
from support import actors
from support.events import new_patient_id
from support.events import sample_discharge as discharge
from support.jetstream import Collector, read_events, stream_messages, wait_for
from support.processes import ServiceProcesses
from support.webhook import WebhookReceiver, serve

from mtm.contracts import (
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    MedicationsReconciled,
    NotificationDelivered,
    Recommendation,
    ReferralRequested,
    ReviewTaskCreated,
    TransitionOfCareRecorded,
)
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    PATIENT_EVENTS_STREAM,
    event_filter,
    physician_inbox_subject,
)
from mtm.contracts.webhooks import verify

pytestmark = pytest.mark.e2e
SECRET = "e2e-secret"


async def send(nc, subject: str, command, headers: dict[str, str]) -> CommandReply:
    """A tool retries while the service it asks is restarting (no responders)."""

    async def attempt() -> CommandReply | None:
        try:
            reply = await nc.request(subject, command.model_dump_json().encode(), timeout=10, headers=headers)
        except nats.errors.NoRespondersError:
            return None
        return CommandReply.model_validate_json(reply.data)

    return await wait_for(attempt, timeout_s=60, every_s=0.2)


async def events(nc, cls) -> list:
    return await read_events(nc, cls, await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(cls)))


async def at_least(nc, cls, n: int):
    found = await events(nc, cls)
    return found if len(found) >= n else None


@pytest.fixture
def receiver():
    yield from serve(WebhookReceiver())


@pytest.fixture
def services(infra, receiver, tmp_path):
    procs = ServiceProcesses(
        infra,
        tmp_path / "logs",
        extra_env={"MTM_NOTIFY_WEBHOOK_URL": receiver.url, "MTM_NOTIFY_WEBHOOK_SECRET": SECRET},
    )
    yield procs
    codes = procs.stop_all()
    assert all(code == 0 for code in codes.values()), {n: procs.logs(n)[-3000:] for n in codes}


async def test_a_discharge_flows_to_one_physician_notification_through_a_crash(clean_jetstream, services, receiver):
    nc = clean_jetstream
    tool = await Collector().start(nc, event_filter(ReviewTaskCreated))
    inbox = await Collector().start(nc, physician_inbox_subject("dr-e2e"))
    services.start_all()
    js = nc.jetstream()

    patient = new_patient_id()
    await wait_for(lambda: _stream_exists(js), timeout_s=60)
    await js.publish(DISCHARGE_INTAKE_SUBJECT, discharge(patient, "dr-e2e"))

    reconciled = await wait_for(lambda: at_least(nc, MedicationsReconciled, 1), timeout_s=60)
    omissions = [d for d in reconciled[0].data.discrepancies if d.type == "omission"]
    assert [d.ingredients for d in omissions] == [("atorvastatin",)]

    await wait_for(lambda: tool.messages, timeout_s=30)
    (task,) = await read_events(nc, ReviewTaskCreated, tool.messages[:1])
    assert task.patient_id == patient and task.data.discrepancies

    # A burst of other discharges while the review service is killed mid-flow and restarted.
    others = [new_patient_id() for _ in range(30)]
    for i, other in enumerate(others):
        await js.publish(DISCHARGE_INTAKE_SUBJECT, discharge(other, f"dr-{i}"))
        if i == 10:
            services.kill("review")
    assert not services.alive("review")
    services.start("review")

    pharmacist = actors.pharmacist("rph-e2e")
    claim = await send(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task.data.task_id), pharmacist)
    assert claim.outcome == "accepted", claim
    recommendation = Recommendation(
        recommendation_id=uuid.uuid4(),
        text="Atorvastatin was omitted at discharge; please confirm whether to restart it.",
        action="start",
        ingredients=("atorvastatin",),
        needs_prescriber=True,
    )
    done = await send(
        nc,
        COMPLETE_REVIEW_TASK,
        CompleteReviewTask(task_id=task.data.task_id, recommendations=(recommendation,)),
        pharmacist,
    )
    assert done.outcome == "accepted", done

    await wait_for(lambda: at_least(nc, ReviewTaskCreated, 31), timeout_s=90)
    delivered = await wait_for(lambda: at_least(nc, NotificationDelivered, 2), timeout_s=60)
    await wait_for(lambda: inbox.messages, timeout_s=10)

    # Nothing lost, nothing doubled: one of each event per discharge, even across the crash.
    per_patient = Counter(e.patient_id for e in await events(nc, ReviewTaskCreated))
    assert set(per_patient) == {patient, *others} and set(per_patient.values()) == {1}
    assert Counter(e.patient_id for e in await events(nc, MedicationsReconciled)) == per_patient
    assert Counter(e.patient_id for e in await events(nc, TransitionOfCareRecorded)) == per_patient
    assert len(await events(nc, ReferralRequested)) == 1

    posts = receiver.received
    assert len(posts) == 1, [p.path for p in posts]
    assert "/physicians/dr-e2e/" in posts[0].path
    assert verify(SECRET, posts[0].body, posts[0].headers) == json.loads(posts[0].body)["notification_id"]
    assert json.loads(posts[0].body)["recommendation"]["recommendation_id"] == str(recommendation.recommendation_id)
    assert len(inbox.messages) == 1
    assert sorted(d.data.channel for d in delivered) == ["nats", "webhook"]
    await tool.stop()
    await inbox.stop()


async def _stream_exists(js) -> bool:
    try:
        await js.stream_info("DISCHARGE_INTAKE")
        await js.consumer_info("DISCHARGE_INTAKE", "reconciliation-discharge-intake")
    except Exception:
        return False
    return True
