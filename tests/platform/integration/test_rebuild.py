"""Every service's tables are a pure function of the log: a rebuild while the stack runs gives the same rows.

The services run on real NATS and Postgres through a mixed workload (discharges native and FHIR, pharmacy fills,
claims, completions with and without referrals, a read receipt, answers, escalations of unanswered referrals with
their reminders, webhook deliveries with a retry and a failure, emails over SMTP, MTM targeting with an enrolment,
adherence and an opt-out). Then each
projection is rebuilt through the operator's request (`RebuildProjection`), and every table must hold exactly
the rows it held before, and the log must hold exactly the messages it held before: a rebuild publishes
nothing. The same again once the stream's deduplication window has passed, when a re-sent event would no
longer be dropped by the server.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from program.integration.test_program_service import discharge as program_discharge
from program.integration.test_program_service import statin_fill
from support import actors
from support.events import new_patient_id
from support.jetstream import wait_for
from support.services import native_discharge
from support.stack import DEDUP_WINDOW_S, dump, messages_in_log, quiet, rebuild, request, service_apps
from support.webhook import WebhookReceiver

from mtm.cli.demo import fhir_discharge
from mtm.contracts import (
    AcknowledgeReferral,
    AnswerReferral,
    ClaimReviewTask,
    CompleteReviewTask,
    Recommendation,
)
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
    LIST_REFERRALS,
    LIST_REVIEW_TASKS,
)

pytestmark = pytest.mark.integration


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
    first, second = found[0], found[1]
    physician = actors.physician(first["physician_id"])
    read = AcknowledgeReferral(referral_id=uuid.UUID(second["referral_id"]))
    assert (await request(nc, ACKNOWLEDGE_REFERRAL, read, actors.physician(second["physician_id"]))).ok
    answer = AnswerReferral(referral_id=uuid.UUID(first["referral_id"]), decision="modified")
    assert (await request(nc, ANSWER_REFERRAL, answer, physician)).ok
    # Two referrals, each by webhook, email and inbox: every notification finished, one after a retry, one refused;
    # the unanswered one escalates and its reminder goes out on the same channels.
    await wait_for(lambda: len(receiver.received) >= 4, timeout_s=30)


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
