"""Every service's tables are a pure function of the log: a rebuild while the stack runs gives the same rows.

The services run on real NATS and Postgres through a mixed workload (discharges native and FHIR, pharmacy fills,
claims, completions with and without referrals, a read receipt, answers, escalations of unanswered referrals with
their reminders, webhook deliveries with a retry and a failure, emails over SMTP, MTM targeting with an enrolment,
adherence and an opt-out; a CMR documented with problems, a follow-up and its action plan delivered, released and
reassigned tasks, an alert override, an outcome, deadlines passed by the timers). Then each
projection is rebuilt through the operator's request (`RebuildProjection`), and every table must hold exactly
the rows it held before, and the log must hold exactly the messages it held before: a rebuild publishes
nothing. The same again once the stream's deduplication window has passed, when a re-sent event would no
longer be dropped by the server.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from program.integration.test_program_service import discharge as program_discharge
from program.integration.test_program_service import statin_fill
from support import actors
from support.events import new_patient_id
from support.jetstream import wait_for
from support.services import native_discharge
from support.stack import (
    DEDUP_WINDOW_S,
    dead_letter_reasons,
    dump,
    messages_in_log,
    quiet,
    rebuild,
    request,
    service_apps,
)
from support.webhook import WebhookReceiver

from mtm.cli.demo import fhir_discharge
from mtm.contracts import (
    AcknowledgeReferral,
    AnswerReferral,
    ClaimReviewTask,
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
from mtm.contracts.documentation import ActionPlanItem, DrugTherapyProblem, Mitigation, ReviewDocumentation
from mtm.contracts.program_commands import DisenrollMember, GetProgramStatus
from mtm.contracts.subjects import (
    ACKNOWLEDGE_REFERRAL,
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
    REASSIGN_REVIEW_TASK,
    RECORD_ACTION_PLAN_DELIVERY,
    RECORD_RECOMMENDATION_OUTCOME,
    RELEASE_REVIEW_TASK,
)

pytestmark = pytest.mark.integration
CMR = "comprehensive-medication-review"


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

    try:
        found = await wait_for(referrals, timeout_s=30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; parked: {await dead_letter_reasons(nc)}") from exc
    first, second = found[0], found[1]
    physician = actors.physician(first["physician_id"])
    read = AcknowledgeReferral(referral_id=uuid.UUID(second["referral_id"]))
    assert (await request(nc, ACKNOWLEDGE_REFERRAL, read, actors.physician(second["physician_id"]))).ok
    answer = AnswerReferral(referral_id=uuid.UUID(first["referral_id"]), decision="modified")
    assert (await request(nc, ANSWER_REFERRAL, answer, physician)).ok
    # Two referrals, each by webhook, email and inbox: every notification finished, one after a retry, one refused;
    # the unanswered one escalates and its reminder goes out on the same channels.
    await wait_for(lambda: len(receiver.received) >= 4, timeout_s=30)
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


async def test_every_projection_rebuilds_to_the_same_rows_and_publishes_nothing(
    clean_jetstream, settings_for, run_service, receiver, smtp, tmp_path
):
    nc = clean_jetstream
    apps = service_apps(settings_for, receiver, smtp, tmp_path)
    async with (
        run_service(apps["reconciliation"]),
        run_service(apps["review"]),
        run_service(apps["referral"]),
        run_service(apps["notify"]),
        run_service(apps["program"]),
    ):
        await run_workload(nc, receiver)
        await wait_for(lambda: quiet(apps, nc), timeout_s=30)
        before = {name: await dump(app) for name, app in apps.items()}
        logged = await messages_in_log(nc)
        assert before["notify"]["notification_attempts"], "the workload should have recorded delivery attempts"
        assert any('"status":"in-progress"' in row for row in before["review"]["review_tasks"])
        assert len(before["review"]["task_worklist"]) == len(before["review"]["review_tasks"])
        referrals = before["referral"]["referrals"]
        assert any('"status":"modified"' in row for row in referrals)
        assert any('"acknowledged_by":"' in row for row in referrals), "the workload should have a read receipt"
        assert any('"escalations":1' in row for row in referrals), "the workload should have an escalation"
        assert before["referral"]["referral_notification_failures"], "the workload should have a failed delivery"
        notifications = before["notify"]["notifications"]
        assert any('"channel":"email","status":"delivered"' in row for row in notifications), notifications
        assert any('"purpose":"reminder"' in row for row in notifications)
        for table in ("members", "review_schedule", "problems", "recommendations", "referral_outcomes"):
            assert before["review"][table], f"the workload should have put rows in review's {table}"
        for table in ("follow_ups", "alert_overrides", "action_plans"):
            assert before["review"][table], f"the workload should have put rows in review's {table}"
        assert any('"overdue_at":null' not in row for row in before["review"]["review_tasks"])
        assert any('"disenrolment_reason":"opted-out"' in row for row in before["program"]["enrolments"])
        assert before["program"]["fills"] and before["program"]["adherence"] and before["program"]["reviews"]
        emailed = len(smtp.messages())

        for round_ in ("within the deduplication window", "after the deduplication window"):
            if round_.startswith("after"):
                await asyncio.sleep(DEDUP_WINDOW_S + 0.5)
            for name, app in apps.items():
                report = await rebuild(nc, name)
                assert report.phase == "swapped", (name, report.message)
                assert await dump(app) == before[name], f"{name} rebuilt differently ({round_})"
            assert await messages_in_log(nc) == logged, f"a rebuild published events ({round_})"
            assert len(smtp.messages()) == emailed, f"a rebuild sent an email ({round_})"

        # Rebuilds while discharges keep arriving: what was written to the old tables during the replay must
        # not be lost by the swap, so the tables after it are again what the log says (checked by a rebuild).
        traffic = asyncio.create_task(keep_discharging(nc))
        try:
            for name in apps:
                assert (await rebuild(nc, name)).phase == "swapped"
        finally:
            traffic.cancel()
        # The traffic grows with how long the rebuilds took (a loaded machine), and so does the catching up.
        await wait_for(lambda: quiet(apps, nc), timeout_s=180)
        live = {name: await dump(app) for name, app in apps.items()}
        assert len(live["review"]["review_tasks"]) > len(before["review"]["review_tasks"])
        for name, app in apps.items():
            assert (await rebuild(nc, name)).phase == "swapped"
            assert await dump(app) == live[name], f"{name}: the swap lost what was written during the rebuild"


# Enough to overlap every rebuild's replay and swap, few enough to be caught up with afterwards.
TRAFFIC_DISCHARGES = 3_000


async def keep_discharging(nc) -> None:
    """Discharges of today, whose reviews are not due yet: the traffic is writes, not a backlog of escalations."""
    js = nc.jetstream()
    for _ in range(TRAFFIC_DISCHARGES):
        event = native_discharge(new_patient_id())
        today = datetime.now(UTC)
        data = event.data.model_copy(update={"admitted_at": today - timedelta(days=3), "discharged_at": today})
        event = event.model_copy(update={"data": data})
        await js.publish(
            DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
        )
        await asyncio.sleep(0.02)


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

        await wait_for(lambda: tasks_relayed(app, 2), timeout_s=30)
        before = await dump(app)
        report = await rebuild(nc, "review")
        assert report.phase == "swapped", report.message
        assert "4 unreadable events skipped" in report.message
        assert await dump(app) == before


async def test_a_log_holding_events_kept_in_the_object_store_rebuilds_to_the_same_rows(
    clean_jetstream, settings_for, run_service
):
    """Events too large for one message are references on the log: the live consumers and a rebuild read them
    through the object store alike. A reference whose body the store lost is held by the live consumer (never
    parked) and stops a rebuild, which keeps the live tables rather than swap in tables without that event."""
    from conftest import declare_as_owner
    from support.events import medications_reconciled, publish_event

    from mtm.contracts.subjects import dead_letter_stream, event_subject
    from mtm.platform.bodies import BodyReference, EventBodies
    from mtm.platform.streams import PATIENT_EVENTS
    from mtm.review.bootstrap import create_app
    from mtm.review.settings import ReviewSettings

    nc = clean_jetstream
    js = nc.jetstream()
    await declare_as_owner(nc, PATIENT_EVENTS)

    async def publish_stored(event, *, lose_body: bool = False) -> None:
        """As a producer appends an event too large for one message: the body first, then the reference.

        A lost body is deleted before its reference is appended: deleted after, the live consumer can read the
        body first (it did under load), and the loss is never seen."""
        reference = await EventBodies(nc).store(str(event.id), event.model_dump_json().encode())
        if lose_body:
            stored = BodyReference.of(reference)
            assert stored is not None
            await (await js.object_store(stored.bucket)).delete(stored.object)
        await js.publish(event_subject(event), reference, headers={"Nats-Msg-Id": str(event.id)})

    app = create_app(settings_for(ReviewSettings), checker=lambda rec: ([], "routine"))
    async with run_service(app):
        await publish_event(nc, medications_reconciled(new_patient_id()))
        await publish_stored(medications_reconciled(new_patient_id()))

        await wait_for(lambda: tasks_relayed(app, 2), timeout_s=30)
        before = await dump(app)
        report = await rebuild(nc, "review")
        assert report.phase == "swapped", report.message
        assert await dump(app) == before

        await publish_stored(medications_reconciled(new_patient_id()), lose_body=True)
        processor = app.runtime.processors["review-medications-reconciled"]
        await wait_for(lambda: processor.waited_out > 0, timeout_s=30)
        report = await rebuild(nc, "review")
        assert report.phase == "failed" and "StoredBodyMissing" in report.message, report.message
        assert await dump(app) == before
        assert (await js.stream_info(dead_letter_stream("review"))).state.messages == 0


async def tasks_relayed(app, count: int) -> bool:
    """Review holds `count` tasks and its outbox has sent every event about them."""
    if len((await dump(app))["review_tasks"]) != count:
        return False
    conn = await asyncpg.connect(app.runtime.database_url)
    try:
        return not await conn.fetchval("SELECT count(*) FROM public.outbox")
    finally:
        await conn.close()


async def test_medication_lists_let_go_from_memory_during_a_rebuild_are_written_as_folded(
    clean_jetstream, settings_for, run_service, monkeypatch
):
    """A rebuild writes each patient's list once, when it is let go from memory or at the end of the replay. With
    room for one patient and batches of two events, lists are let go and read back between discharges and fills:
    the rows must still be the ones the live service wrote."""
    from mtm.platform import projection
    from mtm.platform import rebuild as rebuilding
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    nc = clean_jetstream
    js = nc.jetstream()
    app = create_app(settings_for(ReconciliationSettings, seal_events=True))
    patients = [new_patient_id() for _ in range(3)]
    today = datetime.now(UTC).date()
    async with run_service(app):
        for stay in ("first-stay", "second-stay"):
            for patient in patients:
                event = native_discharge(patient)
                event = event.model_copy(update={"data": event.data.model_copy(update={"encounter_id": stay})})
                await js.publish(
                    DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
                )
                filled_on = today - timedelta(days=30 if stay == "first-stay" else 0)
                await js.publish(FILL_INTAKE_SUBJECT, statin_fill(patient, filled_on).model_dump_json().encode())
        apps = {"reconciliation": app}

        async def all_in() -> bool:
            return await quiet(apps, nc) and len((await dump(app))["reconciliations"]) == 2 * len(patients)

        await wait_for(all_in, timeout_s=60)
        before = await dump(app)
        assert len(before["medication_lists"]) == len(patients)
        monkeypatch.setattr(projection, "KEPT_PATIENTS", 1)
        monkeypatch.setattr(rebuilding, "APPLY_BATCH", 2)
        report = await rebuild(nc, "reconciliation")
        assert report.phase == "swapped", report.message
        assert await dump(app) == before
