"""No PHI in any log line: patient names, birth dates and free text seeded into a full flow never reach a log.

The five services run as processes at DEBUG (every logger they have, FastStream's and the libraries' included),
the web app in this process renders the patient's task. Markers go in where PHI lives: the FHIR Patient's
name and birth date, a medication's text and a stop reason, a native discharge's birth date and medication
text, a bundle that cannot be read (dead-lettered: its reason names the field, the log line only ids), the
pharmacist's recommendation and the physician's answer. Then every line of every process must be JSON and
hold none of them.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from support import actors
from support.events import new_patient_id
from support.jetstream import stream_messages, wait_for
from support.processes import ServiceProcesses
from support.services import native_discharge
from support.web import add_accounts, running_web, signed_in, web_settings
from support.webhook import WebhookReceiver, serve

from mtm.cli.demo import fhir_discharge
from mtm.contracts import (
    AnswerReferral,
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    DeadLetter,
    ListReferrals,
    ListReviewTasks,
    Recommendation,
    ReferralAnswered,
)
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    LIST_REFERRALS,
    LIST_REVIEW_TASKS,
    PATIENT_EVENTS_STREAM,
    event_filter,
)
from mtm.platform.logging import formatter
from mtm.platform.status import wait_until_ready

pytestmark = pytest.mark.e2e
SECRET = "phi-test-secret"
GIVEN, FAMILY = "Quillonia", "Zyxwarden"
BIRTH_DATE = "1931-07-14"
MARKERS = (
    GIVEN,
    FAMILY,
    BIRTH_DATE,
    "QXMEDTEXT",
    "QXSTOPREASON",
    "QXNATIVEMED",
    "QXBADBUNDLE",
    "QXRECOMMENDATION",
    "QXANSWERNOTE",
)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(formatter("json"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def web_lines() -> Iterator[Lines]:
    handler = Lines()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


@pytest.fixture
def receiver():
    yield from serve(WebhookReceiver())


def marked_bundle() -> tuple[bytes, str]:
    """The demo FHIR discharge with a name, a birth date, a medication's text and a stop reason marked."""
    payload, _, patient = fhir_discharge()
    bundle = json.loads(payload)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource.update(name=[{"family": FAMILY, "given": [GIVEN]}], birthDate=BIRTH_DATE)
        if resource.get("id") == "ms9":
            resource["medicationCodeableConcept"]["text"] += " QXMEDTEXT"
        if resource.get("id") == "mr12":
            resource["statusReason"]["text"] += " QXSTOPREASON"
    return json.dumps(bundle).encode(), patient


def unreadable_bundle() -> bytes:
    payload, _, _ = fhir_discharge()
    bundle = json.loads(payload)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"].update(birthDate="QXBADBUNDLE", name=[{"family": FAMILY}])
    return json.dumps(bundle).encode()


async def ask(nc, subject: str, body, headers) -> CommandReply:
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def test_no_log_line_of_any_process_holds_patient_data(infra, clean_jetstream, receiver, tmp_path, web_lines):
    nc = clean_jetstream
    services = ServiceProcesses(
        infra,
        tmp_path / "logs",
        extra_env={
            "MTM_LOG_LEVEL": "DEBUG",
            "MTM_LOG_FORMAT": "json",
            "MTM_NOTIFY_WEBHOOK_URL": receiver.url,
            "MTM_NOTIFY_WEBHOOK_SECRET": SECRET,
            "MTM_REFERRAL_RESPOND_WITHIN_S": "1",
            "MTM_REFERRAL_ESCALATION_CHECK_S": "0.2",
        },
    )
    services.start_all()
    try:
        js = nc.jetstream()
        await wait_until_ready(infra.nats_client("cli"), timeout_s=120)
        bundle, patient = marked_bundle()
        await js.publish(DISCHARGE_INTAKE_SUBJECT, bundle, headers={"Nats-Msg-Id": f"phi:{uuid.uuid4()}"})
        await js.publish(DISCHARGE_INTAKE_SUBJECT, unreadable_bundle())
        native = native_discharge(new_patient_id())
        body = json.loads(native.model_dump_json())
        body["data"]["patient"]["birth_date"] = BIRTH_DATE
        body["data"]["home_medications"][0]["text"] += " QXNATIVEMED"
        await js.publish(DISCHARGE_INTAKE_SUBJECT, json.dumps(body).encode())

        async def task_of(patient_id: str):
            reply = await ask(nc, LIST_REVIEW_TASKS, ListReviewTasks(patient_id=patient_id), actors.ADMIN)
            return reply.data[0]["task_id"] if reply.ok and reply.data else None

        task_id = uuid.UUID(await wait_for(lambda: task_of(patient), timeout_s=90))
        await wait_for(lambda: task_of(native.patient_id), timeout_s=60)

        # The pharmacist opens the worklist and the task in the web app: the page shows the patient.
        async with running_web(web_settings(infra)) as web:
            await add_accounts(web.store)
            client = await signed_in(web, "ana")
            try:
                assert (await client.get("/worklist")).status_code == 200
                assert (await client.get(f"/tasks/{task_id}")).status_code == 200
            finally:
                await client.aclose()

        pharmacist = actors.pharmacist("rph-phi")
        assert (await ask(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), pharmacist)).ok
        recommendation = Recommendation(
            recommendation_id=uuid.uuid4(), text="QXRECOMMENDATION restart atorvastatin", needs_prescriber=True
        )
        completion = CompleteReviewTask(task_id=task_id, recommendations=(recommendation,))
        assert (await ask(nc, COMPLETE_REVIEW_TASK, completion, pharmacist)).ok

        physician = actors.physician("prac-pcp-42")

        async def referral():
            reply = await ask(nc, LIST_REFERRALS, ListReferrals(patient_id=patient), physician)
            return reply.data[0]["referral_id"] if reply.ok and reply.data else None

        referral_id = uuid.UUID(await wait_for(referral, timeout_s=60))
        answer = AnswerReferral(referral_id=referral_id, decision="modified", note="QXANSWERNOTE lower the dose")
        assert (await ask(nc, ANSWER_REFERRAL, answer, physician)).ok
        await wait_for(lambda: receiver.received or None, timeout_s=60)
        await wait_for(lambda: stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReferralAnswered)), timeout_s=30)
        dead = await wait_for(lambda: stream_messages(nc, "DEAD_LETTERS_RECONCILIATION"), timeout_s=30)
        # The markers did travel with the flow: to the physician, and with the parked bundle.
        assert len(dead) == 1 and b"QXBADBUNDLE" in DeadLetter.model_validate_json(dead[0].data).payload
        assert any(b"QXRECOMMENDATION" in post.body for post in receiver.received)
    finally:
        codes = services.stop_all()
    assert all(code == 0 for code in codes.values()), codes

    lines = {name: services.logs(name).splitlines() for name in codes}
    lines["web"] = web_lines.lines
    assert all(lines.values()) and len(web_lines.lines) > 0
    for name, found in lines.items():
        for line in found:
            try:
                json.loads(line)
            except ValueError:
                pytest.fail(f"{name} wrote a line that is not JSON: {line[:300]}")
            leaked = [marker for marker in MARKERS if marker.lower() in line.lower()]
            assert not leaked, (name, leaked, line[:500])
    # The flow did run at DEBUG through every service (FastStream's own lines included).
    everything = [json.loads(line) for found in lines.values() for line in found]
    assert {line.get("service") for line in everything} >= {"reconciliation", "review", "referral", "notify", "web"}
    assert any(line.get("logger", "").startswith("faststream") for line in everything)
    assert any(line.get("event") == "message dead-lettered" for line in everything)
