"""Every service's tables are a pure function of the log: a rebuild while the stack runs gives the same rows.

The four services run on real NATS and Postgres through a mixed workload (discharges native and FHIR, claims,
completions with and without referrals, answers, webhook deliveries with a retry and a failure). Then each
projection is rebuilt through the operator's request (`RebuildProjection`), and every table must hold exactly
the rows it held before, and the log must hold exactly the messages it held before: a rebuild publishes
nothing. The same again once the stream's deduplication window has passed, when a re-sent event would no
longer be dropped by the server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from support import actors
from support.events import new_patient_id
from support.jetstream import wait_for
from support.services import native_discharge
from support.webhook import WebhookReceiver, serve

from mtm.cli.demo import fhir_discharge
from mtm.contracts import (
    AnswerReferral,
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    Recommendation,
)
from mtm.contracts.admin import RebuildProgress, RebuildProjection, rebuild_progress_subject, rebuild_subject
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    LIST_REFERRALS,
    LIST_REVIEW_TASKS,
    PATIENT_EVENTS_STREAM,
)

pytestmark = pytest.mark.integration
SECRET = "rebuild-test-secret"
DEDUP_WINDOW_S = 2.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from serve(WebhookReceiver())


def service_apps(settings_for, receiver: WebhookReceiver) -> dict:
    from mtm.notify.bootstrap import create_app as notify_app
    from mtm.notify.settings import NotifySettings
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.referral.bootstrap import ReferralSettings
    from mtm.referral.bootstrap import create_app as referral_app
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    return {
        # The owner of the patient log declares it with a short deduplication window, so the test can outlast it.
        "reconciliation": reconciliation_app(settings_for(ReconciliationSettings, duplicate_window_s=DEDUP_WINDOW_S)),
        "review": review_app(settings_for(ReviewSettings)),
        "referral": referral_app(settings_for(ReferralSettings)),
        "notify": notify_app(
            settings_for(
                NotifySettings,
                notify_webhook_url=receiver.url,
                notify_webhook_secret=SECRET,
                notify_backoff_base_s=0.05,
                notify_poll_s=0.05,
            )
        ),
    }


async def request(nc, subject: str, body, headers: dict[str, str] = actors.ADMIN) -> CommandReply:
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def run_workload(nc, receiver: WebhookReceiver) -> None:
    js = nc.jetstream()
    patients = [new_patient_id() for _ in range(5)]
    again = native_discharge(patients[0])  # one patient is discharged twice, from another stay
    again = again.model_copy(update={"data": again.data.model_copy(update={"encounter_id": "second-stay"})})
    for event in [*(native_discharge(p) for p in patients), again]:
        await js.publish(
            DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
        )
    payload, msg_id, _ = fhir_discharge()
    await js.publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})

    async def open_tasks():
        reply = await request(nc, LIST_REVIEW_TASKS, _list_tasks())
        return reply.data if len(reply.data) >= 7 else None

    tasks = await wait_for(open_tasks, timeout_s=30)
    receiver.statuses.extend([503, 410])  # one delivery retried, one refused for good
    for n, task in enumerate(tasks[:4]):
        task_id = uuid.UUID(task["task_id"])
        pharmacist = actors.pharmacist(f"rph-{n}")
        assert (await request(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), pharmacist)).ok
        if n == 3:
            continue  # claimed, still in progress
        recommendations = (
            Recommendation(recommendation_id=uuid.uuid4(), text="Restart atorvastatin", needs_prescriber=n < 2),
        )
        completion = CompleteReviewTask(task_id=task_id, recommendations=recommendations)
        assert (await request(nc, COMPLETE_REVIEW_TASK, completion, pharmacist)).ok

    async def referrals():
        reply = await request(nc, LIST_REFERRALS, _list_referrals())
        return reply.data if len(reply.data) >= 2 else None

    found = await wait_for(referrals, timeout_s=30)
    first = found[0]
    answer = AnswerReferral(referral_id=uuid.UUID(first["referral_id"]), decision="modified")
    assert (await request(nc, ANSWER_REFERRAL, answer, actors.physician(first["physician_id"]))).ok
    # Two referrals, each by webhook and inbox: every notification finished, one after a retry, one refused.
    await wait_for(lambda: len(receiver.received) >= 3, timeout_s=30)


def _list_tasks():
    from mtm.contracts import ListReviewTasks

    return ListReviewTasks()


def _list_referrals():
    from mtm.contracts import ListReferrals

    return ListReferrals()


async def dump(app) -> dict[str, list[str]]:
    """Every row of every table of the service's projection, `applied_events` included, in a stable order."""
    runtime = app.runtime
    tables = (*runtime.definition.handlers.projection.tables, "applied_events")
    conn = await asyncpg.connect(runtime.database_url)
    try:
        return {
            table: sorted(row[0] for row in await conn.fetch(f"SELECT row_to_json(t)::text FROM projection.{table} t"))
            for table in tables
        }
    finally:
        await conn.close()


async def settled(apps: dict, nc=None) -> bool:
    """Nothing left to consume or send and no notification pending: the tables no longer move on their own."""
    if nc is not None:
        js = nc.jetstream()
        for stream in ("DISCHARGE_INTAKE", PATIENT_EVENTS_STREAM):
            for consumer in await js.consumers_info(stream):
                durable = consumer.config.durable_name is not None
                if durable and (consumer.num_pending or consumer.num_ack_pending):
                    return False
    for app in apps.values():
        conn = await asyncpg.connect(app.runtime.database_url)
        try:
            if await conn.fetchval("SELECT count(*) FROM public.outbox"):
                return False
            if app.runtime.name == "notify" and await conn.fetchval(
                "SELECT count(*) FROM projection.notifications WHERE status = 'pending'"
            ):
                return False
        finally:
            await conn.close()
    return True


async def quiet(apps: dict, nc) -> bool:
    """Settled, and still settled a moment later (an event relayed between two looks would otherwise slip by)."""
    if not await settled(apps, nc):
        return False
    await asyncio.sleep(0.3)
    return await settled(apps, nc)


async def rebuild(nc, service: str) -> RebuildProgress:
    command = RebuildProjection()
    progress: asyncio.Queue[RebuildProgress] = asyncio.Queue()

    async def on_progress(msg) -> None:
        await progress.put(RebuildProgress.model_validate_json(msg.data))

    sub = await nc.subscribe(rebuild_progress_subject(service, command.rebuild_id), cb=on_progress)
    try:
        assert (await request(nc, rebuild_subject(service), command)).ok
        while True:
            report = await asyncio.wait_for(progress.get(), timeout=60)
            if report.phase in ("swapped", "failed"):
                return report
    finally:
        await sub.unsubscribe()


async def messages_in_log(nc) -> int:
    return (await nc.jetstream().stream_info(PATIENT_EVENTS_STREAM)).state.messages


async def test_every_projection_rebuilds_to_the_same_rows_and_publishes_nothing(
    clean_jetstream, settings_for, run_service, receiver
):
    nc = clean_jetstream
    apps = service_apps(settings_for, receiver)
    async with (
        run_service(apps["reconciliation"]),
        run_service(apps["review"]),
        run_service(apps["referral"]),
        run_service(apps["notify"]),
    ):
        await run_workload(nc, receiver)
        await wait_for(lambda: quiet(apps, nc), timeout_s=30)
        before = {name: await dump(app) for name, app in apps.items()}
        logged = await messages_in_log(nc)
        assert before["notify"]["notification_attempts"], "the workload should have recorded delivery attempts"
        assert any('"status":"in-progress"' in row for row in before["review"]["review_tasks"])
        assert any('"status":"modified"' in row for row in before["referral"]["referrals"])

        for round_ in ("within the deduplication window", "after the deduplication window"):
            if round_.startswith("after"):
                await asyncio.sleep(DEDUP_WINDOW_S + 0.5)
            for name, app in apps.items():
                report = await rebuild(nc, name)
                assert report.phase == "swapped", (name, report.message)
                assert await dump(app) == before[name], f"{name} rebuilt differently ({round_})"
            assert await messages_in_log(nc) == logged, f"a rebuild published events ({round_})"

        # Rebuilds while discharges keep arriving: what was written to the old tables during the replay must
        # not be lost by the swap, so the tables after it are again what the log says (checked by a rebuild).
        traffic = asyncio.create_task(keep_discharging(nc))
        try:
            for name in apps:
                assert (await rebuild(nc, name)).phase == "swapped"
        finally:
            traffic.cancel()
        await wait_for(lambda: quiet(apps, nc), timeout_s=30)
        live = {name: await dump(app) for name, app in apps.items()}
        assert len(live["review"]["review_tasks"]) > len(before["review"]["review_tasks"])
        for name, app in apps.items():
            assert (await rebuild(nc, name)).phase == "swapped"
            assert await dump(app) == live[name], f"{name}: the swap lost what was written during the rebuild"


async def keep_discharging(nc) -> None:
    js = nc.jetstream()
    while True:
        event = native_discharge(new_patient_id())
        await js.publish(
            DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
        )
        await asyncio.sleep(0.01)


async def test_a_log_holding_unreadable_events_rebuilds_to_the_same_rows(clean_jetstream, settings_for, run_service):
    """Regression: an event no reader can read (parked by the live consumers) made every rebuild fail, and with it
    the first start of a new replica or database on that log. The rebuilt tables skip it, as the live ones did."""
    from conftest import declare_as_owner
    from support.events import medications_reconciled, publish_event

    from mtm.contracts.subjects import dead_letter_stream, patient_subject
    from mtm.platform.streams import PATIENT_EVENTS
    from mtm.review.bootstrap import create_app
    from mtm.review.settings import ReviewSettings

    nc = clean_jetstream
    js = nc.jetstream()
    await declare_as_owner(nc, PATIENT_EVENTS)
    app = create_app(settings_for(ReviewSettings), checker=lambda rec: ([], "routine"))
    async with run_service(app):
        await publish_event(nc, medications_reconciled(new_patient_id()))
        patient = new_patient_id()
        for event_name in ("review_task_created", "review_task_claimed", "review_task_completed"):
            await js.publish(patient_subject(patient, event_name), b"\xff not an event")
        await js.publish(patient_subject(patient, "review_task_claimed"), b'{"id": "' + b"[" * 10_000 + b'"}')
        await publish_event(nc, medications_reconciled(patient))

        async def parked() -> bool:
            return (await js.stream_info(dead_letter_stream("review"))).state.messages >= 3

        await wait_for(parked, timeout_s=30)

        async def both_tasks_relayed() -> bool:
            return len((await dump(app))["review_tasks"]) == 2 and await settled({"review": app})

        await wait_for(both_tasks_relayed, timeout_s=30)
        before = await dump(app)
        report = await rebuild(nc, "review")
        assert report.phase == "swapped", report.message
        assert "4 unreadable events skipped" in report.message
        assert await dump(app) == before
