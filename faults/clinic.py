"""The clinical work the faults happen under: a hospital discharging, pharmacists and physicians at their tools.

* The hospital publishes native discharges (the Synthea population, `bench.workload`) on the intake as its
  integrator user, with `Nats-Msg-Id` = the event id, and sends each again until the server acknowledged it, as
  an integrator must.
  Every patient is new; every seventh id has a `.` in it (percent-encoded in subjects); each names one of the
  run's physicians as primary care.
* Pharmacists read new review tasks from the log (a durable consumer of `ReviewTaskCreated`), claim each one and
  complete it with a recommendation for the prescriber, through the real commands with their actor tokens.
* Physicians read their NATS inbox (a durable consumer of `PHYSICIAN_INBOX`) and answer each referral.

The tools send their commands and open the sealed tasks as the web app's user (the requests pharmacists' and
physicians' pages send, and the keys to open what they show). What they are fed comes from durable consumers,
which only the admin may keep: the web app follows new tasks with a core subscription, which a NATS restart or a
leader loss would make miss some, and the suite must see every one.

Tools retry as people's tools do: a command that got no answer (service restarting, no responders, a timeout)
or `error` is sent again with the same command id; `accepted`, and the `conflict` that says the work was done
already (a retry after a lost reply), end it. What the tools saw is counted here; what happened is read from
the log afterwards (`faults.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import BaseModel
from support import actors

from bench.workload import synthea_transitions
from mtm.contracts import (
    EVENTS,
    AnswerReferral,
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    Recommendation,
    ReviewTaskCreated,
    TransitionOfCareRecorded,
)
from mtm.contracts.events import CareTeam
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_STREAM,
    DISCHARGE_INTAKE_SUBJECT,
    PATIENT_EVENTS_STREAM,
    PHYSICIAN_INBOX_PREFIX,
    PHYSICIAN_INBOX_STREAM,
    event_filter,
)
from mtm.platform.access import ADMIN
from mtm.platform.bodies import EventBodies
from mtm.platform.crypto import KeyRing
from mtm.platform.keys import nats_key_source
from mtm.platform.reading import EventReader

SOURCE = "urn:mtm:faults:hospital"
NAMESPACE = uuid.UUID("0b6f3a52-7c1e-4f0e-9a55-5d7f0c2b8e61")
PHARMACISTS_DURABLE = "faults-pharmacists"
PHYSICIANS_DURABLE = "faults-physicians"
HOSPITAL = "hospital"
TOOLS = "web"
REQUEST_TIMEOUT_S = 15.0
PUBLISH_TIMEOUT_S = 10.0
# A task or referral that is `not_found` may not be in the service's tables yet (a restart rebuilding them).
NOT_FOUND_RETRIES = 60
RETRYABLE = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
    OSError,
)


class ToolFailed(RuntimeError):
    """A tool got an answer it cannot act on (the suite's mistake or a service's), or gave up."""


@dataclass(frozen=True)
class ClinicPlan:
    discharges: int
    physicians: int = 40
    pharmacists: int = 8
    backlog: int = 1500
    """Discharges sent but not yet seen as review tasks, at most (the hospital waits beyond it)."""
    rate_per_s: float | None = None
    """A steady pace for the hospital (None: as fast as the backlog allows)."""
    concurrency: int = 24
    """Tasks and referrals the tools work on at once."""
    dotted_every: int = 7


@dataclass
class Sent:
    patient_id: str
    event_id: str
    physician_id: str
    first_sent: float
    acked: float = 0.0
    intake_seq: int = 0


@dataclass
class ToolStats:
    replies: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    claimed: set[str] = field(default_factory=set)
    completed: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    """Tasks whose referral the physician answered."""
    tasks_seen: dict[str, float] = field(default_factory=dict)
    """Task id → when the pharmacists first saw it (monotonic)."""
    task_patients: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    """Tasks of patients this hospital did not send (R4's), left alone by the pharmacists: task id → patient."""
    referrals_seen: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    unreadable: int = 0
    """Messages the tools could not read and left (R4 sends hostile ones on the subjects they read)."""


def physician_id(run: str, n: int, physicians: int) -> str:
    return f"dr-{run}-{n % physicians}"


def pharmacist_for(task_id: str, pharmacists: int) -> str:
    return f"rph-{uuid.UUID(task_id).int % pharmacists}"


def derived(kind: str, key: str) -> uuid.UUID:
    """Ids a tool derives from what it works on, so its retries (and a restarted tool) send the same command."""
    return uuid.uuid5(NAMESPACE, f"{kind}:{key}")


class Clinic:
    """The hospital and the tools on one stack; `run()` until every discharge was answered by its physician."""

    def __init__(self, connect: Callable[..., Any], plan: ClinicPlan, run_id: str | None = None) -> None:
        self._connect = connect
        self.plan = plan
        self.run_id = run_id or uuid.uuid4().hex[:6]
        self.sent: dict[str, Sent] = {}
        self.ours: set[str] = set()
        """Patients this hospital is sending or sent for the clinic: the pharmacists work on their tasks only."""
        self.aside: dict[str, Sent] = {}
        """Discharges sent for others to act on (R4's hostile commands); nobody at the clinic touches them."""
        self.stats = ToolStats()
        self._next = 0
        self._population = synthea_transitions()
        self._hospital: Client | None = None
        self._tools: Client | None = None
        self._feed: Client | None = None
        self._reader: EventReader | None = None
        self._work = asyncio.Semaphore(plan.concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []

    # --- set-up --------------------------------------------------------------------------------------------

    async def start(self) -> Clinic:
        self._hospital = await self._connect("faults-hospital", user=HOSPITAL)
        self._tools = await self._connect("faults-tools", user=TOOLS)
        self._feed = await self._connect("faults-feed", user=ADMIN)
        self._reader = EventReader(EVENTS, KeyRing(nats_key_source(self._tools)), EventBodies(self._feed))
        js = self._feed.jetstream()
        await js.add_consumer(
            PATIENT_EVENTS_STREAM,
            ConsumerConfig(
                durable_name=PHARMACISTS_DURABLE,
                filter_subject=event_filter(ReviewTaskCreated),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=600,
                max_ack_pending=-1,
            ),
        )
        await js.add_consumer(
            PHYSICIAN_INBOX_STREAM,
            ConsumerConfig(
                durable_name=PHYSICIANS_DURABLE,
                filter_subject=f"{PHYSICIAN_INBOX_PREFIX}.>",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=600,
                max_ack_pending=-1,
            ),
        )
        self._background = [
            asyncio.create_task(self._read(PATIENT_EVENTS_STREAM, PHARMACISTS_DURABLE, self._on_task)),
            asyncio.create_task(self._read(PHYSICIAN_INBOX_STREAM, PHYSICIANS_DURABLE, self._on_referral)),
        ]
        return self

    async def close(self) -> None:
        self._stop.set()
        for task in (*self._background, *self._running):
            task.cancel()
        await asyncio.gather(*self._background, *self._running, return_exceptions=True)
        for nc in (self._hospital, self._tools, self._feed):
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    # --- the hospital --------------------------------------------------------------------------------------

    def discharge(self) -> tuple[Sent, bytes]:
        """The next discharge: a Synthea transition for a new patient, addressed to one of the physicians."""
        n = self._next
        self._next += 1
        dot = "." if self.plan.dotted_every and n % self.plan.dotted_every == 0 else "-"
        patient = f"f{self.run_id}{dot}{n}"
        physician = physician_id(self.run_id, n, self.plan.physicians)
        transition = self._population[n % len(self._population)]
        data = transition.model_copy(
            update={
                "patient": transition.patient.model_copy(update={"patient_id": patient}),
                "care_team": CareTeam(primary_care_physician_id=physician),
            }
        )
        event = TransitionOfCareRecorded.create(source=SOURCE, patient_id=patient, data=data, time=datetime.now(UTC))
        return Sent(patient, str(event.id), physician, time.monotonic()), event.model_dump_json().encode()

    async def send_discharge(self, *, for_the_clinic: bool = True) -> Sent:
        """Publish one discharge until the intake acknowledged it (the same message id every time)."""
        assert self._hospital is not None
        sent, body = self.discharge()
        if for_the_clinic:
            self.ours.add(sent.patient_id)  # before it is sent: its task may come back before the acknowledgement
        js = self._hospital.jetstream()
        delay = 0.1
        while True:
            try:
                ack = await js.publish(
                    DISCHARGE_INTAKE_SUBJECT, body, headers={"Nats-Msg-Id": sent.event_id}, timeout=PUBLISH_TIMEOUT_S
                )
                break
            except RETRYABLE:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if ack.stream != DISCHARGE_INTAKE_STREAM:
            raise ToolFailed(f"discharge stored in {ack.stream}")
        sent.acked = time.monotonic()
        sent.intake_seq = ack.seq
        (self.sent if for_the_clinic else self.aside)[sent.patient_id] = sent
        return sent

    @property
    def backlog(self) -> int:
        return len(self.sent) - len(self.stats.tasks_seen)

    async def send_discharges(self, count: int, *, on_sent: Callable[[int], None] | None = None) -> None:
        """`count` discharges at the plan's pace, holding back while the backlog is full."""
        started = time.monotonic()
        in_flight: set[asyncio.Task[Sent]] = set()
        for index in range(count):
            if self.plan.rate_per_s:
                delay = started + index / self.plan.rate_per_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while self.backlog + len(in_flight) >= self.plan.backlog or len(in_flight) >= 64:
                if in_flight:
                    _, in_flight = await asyncio.wait(in_flight, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(0.05)
            in_flight.add(asyncio.create_task(self.send_discharge()))
            if on_sent is not None:
                on_sent(index + 1)
        if in_flight:
            await asyncio.gather(*in_flight)

    # --- the tools -----------------------------------------------------------------------------------------

    async def _read(self, stream: str, durable: str, handle: Callable[[Any], Any]) -> None:
        """Fetch what the tool is sent and work on it, never more at once than the plan's concurrency."""
        assert self._feed is not None
        js = self._feed.jetstream()
        subscription = None
        while not self._stop.is_set():
            try:
                if subscription is None:
                    subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
                free = self.plan.concurrency * 2 - len(self._running)
                if free <= 0:
                    await asyncio.sleep(0.05)
                    continue
                messages = await subscription.fetch(batch=min(free, 100), timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception:
                await asyncio.sleep(0.5)
                continue
            for msg in messages:
                task = asyncio.create_task(self._work_on(msg, handle))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _work_on(self, msg: Any, handle: Callable[[Any], Any]) -> None:
        async with self._work:
            try:
                await handle(msg)
            except ToolFailed as exc:
                self.stats.failures.append(str(exc))
            with contextlib.suppress(Exception):
                await msg.ack()

    async def _open_task(self, msg: Any) -> ReviewTaskCreated | None:
        """The event with its data opened, as a pharmacist's tool would see it (keys lent by reconciliation, which
        may be restarting: asked again until it answers); None for what no reader can read (R4's hostile events)."""
        assert self._reader is not None
        delay = 0.2
        while True:
            try:
                return (await self._reader.read_as(ReviewTaskCreated, msg.subject, msg.data))[0]
            except RETRYABLE as exc:
                self.stats.retries[f"keys: {type(exc).__name__}"] += 1
            except Exception:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _on_task(self, msg: Any) -> None:
        event = await self._open_task(msg)
        if event is None:
            self.stats.unreadable += 1
            return
        task_id = str(event.data.task_id)
        patient = event.patient_id
        if patient not in self.ours:
            self.stats.others[task_id] = patient
            return
        self.stats.tasks_seen.setdefault(task_id, time.monotonic())
        self.stats.task_patients[task_id] = patient
        pharmacist = pharmacist_for(task_id, self.plan.pharmacists)
        claim = ClaimReviewTask(command_id=derived("claim", task_id), task_id=uuid.UUID(task_id))
        reply = await self.command(CLAIM_REVIEW_TASK, claim, lambda: actors.pharmacist(pharmacist))
        if reply.outcome == "conflict" and reply.status == "completed":
            self.stats.claimed.add(task_id)
            self.stats.completed.add(task_id)
            return  # the task was sent to the tool again after it was done
        self._expect(reply, "claim", task_id)
        self.stats.claimed.add(task_id)
        recommendation = Recommendation(
            recommendation_id=derived("recommendation", task_id),
            text="Please review the medication changes at discharge with the patient.",
            action="other",
            needs_prescriber=True,
        )
        complete = CompleteReviewTask(
            command_id=derived("complete", task_id),
            task_id=uuid.UUID(task_id),
            note="Reviewed after discharge.",
            recommendations=(recommendation,),
        )
        reply = await self.command(COMPLETE_REVIEW_TASK, complete, lambda: actors.pharmacist(pharmacist))
        if not (reply.outcome == "conflict" and reply.status == "completed"):
            self._expect(reply, "complete", task_id)
        self.stats.completed.add(task_id)

    async def _on_referral(self, msg: Any) -> None:
        try:
            message = json.loads(msg.data)
        except ValueError:
            self.stats.unreadable += 1
            return
        referral_id = message["referral_id"]
        physician = message["physician_id"]
        self.stats.referrals_seen.add(referral_id)
        answer = AnswerReferral(
            command_id=derived("answer", referral_id), referral_id=uuid.UUID(referral_id), decision="accepted"
        )
        reply = await self.command(ANSWER_REFERRAL, answer, lambda: actors.physician(physician))
        self._expect(reply, "answer", referral_id)
        self.stats.answered.add(message["task_id"])

    def _expect(self, reply: CommandReply, what: str, key: str) -> None:
        if reply.outcome != "accepted":
            raise ToolFailed(f"{what} {key}: {reply.outcome}: {reply.message}")

    async def command(self, subject: str, body: BaseModel, headers: Callable[[], dict[str, str]]) -> CommandReply:
        """Send until the service gives an answer a person would act on (a fresh token each time)."""
        assert self._tools is not None
        payload = body.model_dump_json().encode()
        delay = 0.2
        not_found = 0
        name = subject.rsplit(".", 2)[-2]
        while True:
            try:
                msg = await self._tools.request(subject, payload, timeout=REQUEST_TIMEOUT_S, headers=headers())
                reply = CommandReply.model_validate_json(msg.data)
            except RETRYABLE as exc:
                self.stats.retries[f"{name}: {type(exc).__name__}"] += 1
            else:
                self.stats.replies[f"{name}: {reply.outcome}"] += 1
                if reply.outcome == "not_found" and not_found < NOT_FOUND_RETRIES:
                    not_found += 1
                elif reply.outcome != "error":
                    return reply
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # --- progress ------------------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every discharge sent became a task, was completed, and its referral answered."""
        sent = len(self.sent)
        tasks = self.stats.tasks_seen.keys()
        return (
            sent > 0
            and len(tasks) >= sent
            and len(self.stats.completed & tasks) >= sent
            and len(self.stats.answered & tasks) >= sent
            and not self._running
        )

    def progress(self) -> str:
        s = self.stats
        tasks = s.tasks_seen.keys()
        return (
            f"sent {len(self.sent)}, tasks {len(tasks)}, completed {len(s.completed & tasks)}, "
            f"referrals {len(s.referrals_seen)}, answered {len(s.answered & tasks)}"
        )

    async def wait_done(
        self, *, stall_s: float, check: Callable[[], None] | None = None, say: Callable[[str], None] | None = None
    ) -> bool:
        """Until every discharge is answered, or nothing moved for `stall_s` (False then)."""
        last, moved, said = self.progress(), time.monotonic(), time.monotonic()
        while not self.done:
            if check is not None:
                check()
            await asyncio.sleep(0.5)
            now = self.progress()
            if now != last:
                last, moved = now, time.monotonic()
            elif time.monotonic() - moved > stall_s:
                return False
            if say is not None and time.monotonic() - said > 15:
                said = time.monotonic()
                say(now)
        return True
