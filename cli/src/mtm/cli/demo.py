"""`make run`: one discharge flowing to a physician's notification, narrated step by step."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import nats

from mtm.cli.identity import dev_issuer
from mtm.cli.receiver import DemoReceiver
from mtm.cli.tool import ToolError, request
from mtm.contracts import (
    AnswerReferral,
    ClaimReviewTask,
    CompleteReviewTask,
    GetReviewTask,
    ListReviewTasks,
    Recommendation,
    ReviewTaskCreated,
)
from mtm.contracts.events import ReviewTask
from mtm.contracts.identity import Actor
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    GET_REVIEW_TASK,
    LIST_REVIEW_TASKS,
    PHYSICIAN_INBOX_PREFIX,
    event_filter,
    patient_of_subject,
)

PHARMACIST = Actor(user_id="ana", role="pharmacist", practitioner_id="rph-demo")
STEP_TIMEOUT_S = 60.0


def _demo_file(name: str) -> str:
    return (files("mtm.cli") / "demo_data" / name).read_text()


def native_discharge() -> tuple[bytes, str, str]:
    """The bundled native sample with fresh ids, so every run is a new patient and a new flow."""
    body = json.loads(_demo_file("native-discharge.json"))
    patient = str(uuid.uuid4())
    event_id = str(uuid.uuid4())
    body.update(id=event_id, correlation_id=event_id, subject=f"Patient/{patient}")
    body["data"]["patient"]["patient_id"] = patient
    return json.dumps(body).encode(), event_id, patient


def fhir_discharge() -> tuple[bytes, str, str]:
    """The bundled FHIR R4 discharge bundle (every kind of discrepancy) for a new patient."""
    bundle = json.loads(_demo_file("fhir-discharge.json"))
    patient = str(uuid.uuid4())
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["resource"]["id"] = patient
    payload = json.dumps(bundle).replace('"Patient/p1"', f'"Patient/{patient}"').encode()
    return payload, f"demo-bundle:{uuid.uuid4()}", patient


async def run_demo(url: str, say: Callable[[str], None], webhook_posts: asyncio.Queue[dict[str, Any]]) -> None:
    nc = await nats.connect(url)
    opened: asyncio.Queue[str] = asyncio.Queue()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_task(msg: Any) -> None:
        # The event's data is sealed with the patient's key: a tool learns from the envelope whose task opened,
        # then asks review for it with the pharmacist's token.
        await opened.put(patient_of_subject(msg.subject))

    async def on_inbox(msg: Any) -> None:
        await inbox.put(json.loads(msg.data))

    await nc.subscribe(event_filter(ReviewTaskCreated), cb=on_task)
    await nc.subscribe(f"{PHYSICIAN_INBOX_PREFIX}.>", cb=on_inbox)
    try:
        js = nc.jetstream()
        payload, msg_id, patient = fhir_discharge()
        await js.publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
        say(f"1. hospital published a FHIR R4 discharge bundle for Patient/{patient}")
        payload, msg_id, other = native_discharge()
        await js.publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
        say(f"   ... and a native TransitionOfCareRecorded for Patient/{other}")

        while await asyncio.wait_for(opened.get(), STEP_TIMEOUT_S) != patient:
            pass
        issuer = dev_issuer()
        pharmacist = issuer.issue(PHARMACIST)
        data = await task_of(url, patient, pharmacist)
        say(
            f"2. pharmacist tool received review task {data.task_id}: priority {data.priority}, "
            f"{len(data.discrepancies)} discrepancies, {len(data.alerts)} drug alerts"
        )
        for d in data.discrepancies:
            say(f"     discrepancy {d.type}: {d.message}")
        for a in data.alerts[:5]:
            say(f"     alert {a.severity}/{a.kind}: {a.message}")

        claim = await request(url, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=data.task_id), pharmacist)
        say(f"3. pharmacist {PHARMACIST.acting_as} claimed it: {claim.outcome}")
        first = data.discrepancies[0] if data.discrepancies else None
        recommendation = Recommendation(
            recommendation_id=uuid.uuid4(),
            text=f"Please review: {first.message}" if first else "Please review the discharge medication list.",
            action="start" if first and first.type == "omission" else "other",
            ingredients=first.ingredients if first else (),
            needs_prescriber=True,
            priority="urgent",
        )
        done = await request(
            url,
            COMPLETE_REVIEW_TASK,
            CompleteReviewTask(task_id=data.task_id, note="Demo review", recommendations=(recommendation,)),
            pharmacist,
        )
        say(f"4. pharmacist {PHARMACIST.acting_as} completed it, referring to the prescriber: {done.outcome}")

        post = await asyncio.wait_for(webhook_posts.get(), STEP_TIMEOUT_S)
        say(f"5. physician {post['physician_id']} received a signed webhook: referral {post['referral_id']}")
        message = await asyncio.wait_for(inbox.get(), STEP_TIMEOUT_S)
        say(f"6. ... and the same referral in the NATS inbox {PHYSICIAN_INBOX_PREFIX}.{message['physician_id']}")

        physician = issuer.issue(Actor(user_id="dr.demo", role="physician", practitioner_id=post["physician_id"]))
        answer = await request(
            url,
            ANSWER_REFERRAL,
            AnswerReferral(referral_id=uuid.UUID(post["referral_id"]), decision="accepted"),
            physician,
        )
        say(f"7. physician answered the referral: {answer.outcome} ({answer.message})")
    finally:
        await nc.drain()


async def task_of(url: str, patient: str, token: str) -> ReviewTask:
    """The review task opened for the patient, as the pharmacist's queue and task view show it."""
    queue = await request(url, LIST_REVIEW_TASKS, ListReviewTasks(status="requested", limit=200), token)
    task_id = next(t["task_id"] for t in queue.data or [] if t["patient"] == f"Patient/{patient}")
    reply = await request(url, GET_REVIEW_TASK, GetReviewTask(task_id=uuid.UUID(task_id)), token)
    return ReviewTask.model_validate(reply.data["task"])


class DemoRun:
    """The physician's webhook endpoint for the demo, and the demo flow once the stack is up."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        # A Standard Webhooks secret (`whsec_<base64>`), the form any receiver's library takes.
        self._secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self._receiver = DemoReceiver(self._secret.encode(), self._on_post)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._posts: asyncio.Queue[dict[str, Any]] | None = None

    def start(self) -> DemoRun:
        self._receiver.start()
        return self

    def env(self) -> dict[str, str]:
        """What notify needs to deliver to this endpoint."""
        return {"MTM_NOTIFY_WEBHOOK_URL": self._receiver.url, "MTM_NOTIFY_WEBHOOK_SECRET": self._secret}

    def _on_post(self, body: bytes, webhook_id: str) -> None:
        # Called on the receiver's thread; posts arrive only once the flow below has started.
        if self._loop is not None and self._posts is not None:
            self._loop.call_soon_threadsafe(self._posts.put_nowait, json.loads(body))

    async def run(self, url: str) -> int:
        self._loop = asyncio.get_running_loop()
        self._posts = asyncio.Queue()
        self._say("running the demo flow (discharge → review task → referral → physician) ...")
        try:
            await run_demo(url, self._say, self._posts)
        except (TimeoutError, ToolError) as exc:
            self._say(f"demo did not finish: {exc or type(exc).__name__}; see the service logs above")
            return 1
        self._say("demo finished: one discharge reached the physician.")
        return 0

    def stop(self) -> None:
        self._receiver.stop()
