"""Every service's tables are a pure function of the log: a rebuild while the stack runs gives the same rows.

The services run on real NATS and Postgres through a mixed workload (discharges native and FHIR, pharmacy fills,
claims, completions with and without referrals, answers, webhook deliveries with a retry and a failure, MTM
targeting with an enrolment, adherence and an opt-out; a CMR documented with problems, a follow-up and its action
plan delivered, released and reassigned tasks, an alert override, an outcome, deadlines passed by the timers). Then
each projection is rebuilt through the operator's request (`RebuildProjection`), and every table must hold exactly
the rows it held before, and the log must hold exactly the messages it held before: a rebuild publishes
nothing. The same again once the stream's deduplication window has passed, when a re-sent event would no
longer be dropped by the server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from program.integration.test_program_service import discharge as program_discharge
from program.integration.test_program_service import statin_fill
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
    FollowUpRequest,
    GetReviewRecord,
    ListReviewTasks,
    OverrideAlert,
    ReassignReviewTask,
    Recommendation,
    RecordActionPlanDelivery,
    RecordRecommendationOutcome,
    ReleaseReviewTask,
)
from mtm.contracts.admin import RebuildProgress, RebuildProjection, rebuild_progress_subject, rebuild_subject
from mtm.contracts.documentation import ActionPlanItem, DrugTherapyProblem, Mitigation, ReviewDocumentation
from mtm.contracts.program_commands import DisenrollMember, GetProgramStatus
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    DISENROLL_MEMBER,
    FILL_INTAKE_SUBJECT,
    GET_PROGRAM_STATUS,
    GET_REVIEW_RECORD,
    LIST_REFERRALS,
    LIST_REVIEW_TASKS,
    OVERRIDE_ALERT,
    PATIENT_EVENTS_STREAM,
    REASSIGN_REVIEW_TASK,
    RECORD_ACTION_PLAN_DELIVERY,
    RECORD_RECOMMENDATION_OUTCOME,
    RELEASE_REVIEW_TASK,
)

pytestmark = pytest.mark.integration
SECRET = "rebuild-test-secret"
CMR = "comprehensive-medication-review"
DEDUP_WINDOW_S = 2.0


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from serve(WebhookReceiver())


def service_apps(settings_for, receiver: WebhookReceiver) -> dict:
    from mtm.notify.bootstrap import create_app as notify_app
    from mtm.notify.settings import NotifySettings
    from mtm.program.bootstrap import create_app as program_app
    from mtm.program.settings import ProgramSettings
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.referral.bootstrap import ReferralSettings
    from mtm.referral.bootstrap import create_app as referral_app
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    return {
        # The owner of the patient log declares it with a short deduplication window, so the test can outlast it.
        "reconciliation": reconciliation_app(settings_for(ReconciliationSettings, duplicate_window_s=DEDUP_WINDOW_S)),
        "review": review_app(settings_for(ReviewSettings, review_timer_every_s=0.1)),
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
        "program": program_app(settings_for(ProgramSettings, program_evaluation_every_s=0.1)),
    }


async def request(nc, subject: str, body, headers: dict[str, str] = actors.ADMIN) -> CommandReply:
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def run_workload(nc, receiver: WebhookReceiver) -> None:
    js = nc.jetstream()
    patients = [new_patient_id() for _ in range(5)]
    for patient in [*patients, patients[0]]:  # one patient is discharged twice
        event = native_discharge(patient)
        await js.publish(
            DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
        )
    payload, msg_id, _ = fhir_discharge()
    await js.publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
    # A member targeted on a fill and enrolled, then opting out; fills of the other patients too.
    member = new_patient_id()
    await js.publish(DISCHARGE_INTAKE_SUBJECT, program_discharge(member).model_dump_json().encode())
    today = datetime.now(UTC).date()
    for patient, on in ((member, today - timedelta(days=40)), (member, today), (patients[1], today)):
        await js.publish(FILL_INTAKE_SUBJECT, statin_fill(patient, on).model_dump_json().encode())

    async def enrolled():
        reply = await request(nc, GET_PROGRAM_STATUS, GetProgramStatus(patient_id=member))
        return reply.ok and reply.data["enrolments"]

    await wait_for(enrolled, timeout_s=30)
    opt_out = DisenrollMember(patient_id=member, program_year=today.year, reason="opted-out")
    assert (await request(nc, DISENROLL_MEMBER, opt_out, actors.pharmacist("rph-0"))).ok

    async def open_tasks():
        reply = await request(nc, LIST_REVIEW_TASKS, _list_tasks())
        return reply.data if len(reply.data) >= 8 else None

    tasks = [t for t in await wait_for(open_tasks, timeout_s=30) if t["reason"] == "post-discharge-review"]
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
    await run_review_program_workload(nc)


async def run_review_program_workload(nc) -> None:
    """A member the program enrols (statin fills with a gap: adherence newly below 80%, covered by the open CMR)
    goes through a documented CMR: every table of review's projection gets rows, every timer fires."""
    js = nc.jetstream()
    member = new_patient_id()
    await js.publish(DISCHARGE_INTAKE_SUBJECT, program_discharge(member).model_dump_json().encode())
    today = datetime.now(UTC).date()
    for on in (today - timedelta(days=40), today):
        await js.publish(FILL_INTAKE_SUBJECT, statin_fill(member, on).model_dump_json().encode())

    async def cmr():
        found = await request(nc, LIST_REVIEW_TASKS, ListReviewTasks(patient_id=member, reason=CMR))
        return found.data[0] if found.data else None

    task_id = uuid.UUID((await wait_for(cmr, timeout_s=30))["task_id"])
    rph, other_rph = actors.pharmacist("rph-cmr"), actors.pharmacist("rph-other")
    assert (await request(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), other_rph)).ok
    assert (await request(nc, RELEASE_REVIEW_TASK, ReleaseReviewTask(task_id=task_id), other_rph)).ok
    assert (await request(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), other_rph)).ok
    move = ReassignReviewTask(task_id=task_id, pharmacist_id="rph-cmr")
    assert (await request(nc, REASSIGN_REVIEW_TASK, move, actors.ADMIN)).ok
    problem = DrugTherapyProblem(
        problem_id=uuid.uuid4(),
        category="adherence",
        detail="Misses evening doses",
        mitigations=(Mitigation(action="10"),),
    )
    advice = Recommendation(recommendation_id=uuid.uuid4(), text="Use a weekly pill box", problem_id=problem.problem_id)
    documentation = ReviewDocumentation(
        performed_on=datetime.now(UTC).date(),
        delivery_method="telephone",
        problems=(problem,),
        action_plan=(ActionPlanItem(topic="Missed doses", steps=("Fill a pill box every Sunday",)),),
    )
    soon = FollowUpRequest(due=datetime.now(UTC) - timedelta(minutes=1), reason="Check the pill box")
    completion = CompleteReviewTask(
        task_id=task_id, recommendations=(advice,), documentation=documentation, follow_ups=(soon,)
    )
    assert (await request(nc, COMPLETE_REVIEW_TASK, completion, rph)).ok
    outcome = RecordRecommendationOutcome(recommendation_id=advice.recommendation_id, outcome="accepted")
    assert (await request(nc, RECORD_RECOMMENDATION_OUTCOME, outcome, rph)).ok
    delivery = RecordActionPlanDelivery(task_id=task_id, method="mail", delivered_on=datetime.now(UTC).date())
    assert (await request(nc, RECORD_ACTION_PLAN_DELIVERY, delivery, rph)).ok

    tasks = (await request(nc, LIST_REVIEW_TASKS, ListReviewTasks())).data
    alerted = next(t for t in tasks if t["alerts"])
    override = OverrideAlert(task_id=uuid.UUID(alerted["task_id"]), alert=0, reason_code="will-monitor", reason="ok")
    assert (await request(nc, OVERRIDE_ALERT, override, rph)).ok

    async def follow_up_handled():
        record = (await request(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=member))).data
        pending = [s for s in record["scheduled"] if s["trigger"] == "follow-up"]
        return record if record["follow_ups"] and not pending else None

    await wait_for(follow_up_handled, timeout_s=30)


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


async def settled(apps: dict) -> bool:
    """Nothing left to send and no notification pending: the tables no longer move on their own."""
    for app in apps.values():
        conn = await asyncpg.connect(app.runtime.database_url)
        try:
            if await conn.fetchval("SELECT count(*) FROM public.outbox"):
                return False
            if app.runtime.name == "notify" and await conn.fetchval(
                "SELECT count(*) FROM projection.notifications WHERE status = 'pending'"
            ):
                return False
            if app.runtime.name == "review" and await conn.fetchval(REVIEW_DEADLINES_PENDING):
                return False
            if app.runtime.name == "program" and await conn.fetchval(
                "SELECT count(*) FROM projection.members WHERE inputs_seen > inputs_evaluated"
            ):
                return False
        finally:
            await conn.close()
    return True


# Deadlines passed that review's timers have not marked yet: until they have, its tables still move on their own.
REVIEW_DEADLINES_PENDING = """
SELECT (SELECT count(*) FROM projection.review_tasks
        WHERE status <> 'completed' AND overdue_at IS NULL AND due <= now())
     + (SELECT count(*) FROM projection.review_schedule WHERE handled_at IS NULL AND opens_at <= now())
     + (SELECT count(*) FROM projection.action_plans
        WHERE delivered_on IS NULL AND overdue_at IS NULL AND due <= now())
"""


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
        run_service(apps["program"]),
    ):
        await run_workload(nc, receiver)
        await wait_for(lambda: settled(apps), timeout_s=30)
        before = {name: await dump(app) for name, app in apps.items()}
        logged = await messages_in_log(nc)
        assert before["notify"]["notification_attempts"], "the workload should have recorded delivery attempts"
        assert any('"status":"in-progress"' in row for row in before["review"]["review_tasks"])
        assert any('"status":"modified"' in row for row in before["referral"]["referrals"])
        for table in ("members", "review_schedule", "problems", "recommendations", "referral_outcomes"):
            assert before["review"][table], f"the workload should have put rows in review's {table}"
        for table in ("follow_ups", "alert_overrides", "action_plans"):
            assert before["review"][table], f"the workload should have put rows in review's {table}"
        assert any('"overdue_at":null' not in row for row in before["review"]["review_tasks"])
        assert any('"disenrolment_reason":"opted-out"' in row for row in before["program"]["enrolments"])
        assert before["program"]["fills"] and before["program"]["adherence"] and before["program"]["reviews"]

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
        await wait_for(lambda: settled(apps), timeout_s=30)
        live = {name: await dump(app) for name, app in apps.items()}
        assert len(live["review"]["review_tasks"]) > len(before["review"]["review_tasks"])
        for name, app in apps.items():
            assert (await rebuild(nc, name)).phase == "swapped"
            assert await dump(app) == live[name], f"{name}: the swap lost what was written during the rebuild"


async def keep_discharging(nc) -> None:
    """Discharges of today, whose reviews are not due yet: the traffic is writes, not a backlog of escalations."""
    js = nc.jetstream()
    while True:
        event = native_discharge(new_patient_id())
        today = datetime.now(UTC)
        data = event.data.model_copy(update={"admitted_at": today - timedelta(days=3), "discharged_at": today})
        event = event.model_copy(update={"data": data})
        await js.publish(
            DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
        )
        await asyncio.sleep(0.01)
