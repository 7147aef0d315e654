"""What happened, read back from the log: every acknowledged discharge followed to its physician's answer.

Each step of the flow is a stage keyed the way its guarantee is stated (one reconciliation per discharge, one
claim per task, one notification per referral and channel…). For a stage, `lost` counts keys that should be
there and are not, `doubled` counts messages beyond the first for a key (another event for the same thing, or
the same event id stored twice), `unexpected` counts keys nobody asked for. Notifications are also counted where
physicians receive them: webhook-ids at the HTTP receiver, message ids on the physician inbox stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError
from support.webhook import WebhookReceiver

from mtm.contracts import EVENTS, DeadLetter
from mtm.contracts.admin import SERVICES
from mtm.contracts.subjects import (
    DEAD_LETTER_PREFIX,
    PATIENT_EVENTS_STREAM,
    PHYSICIAN_INBOX_STREAM,
    dead_letter_stream,
)
from mtm.contracts.webhooks import WEBHOOK_ID_HEADER
from mtm.platform.bodies import EventBodies
from mtm.platform.crypto import ErasedPatient, KeyRing
from mtm.platform.faults import is_transient
from mtm.platform.keys import nats_key_source
from mtm.platform.reading import EventReader

CHANNELS = ("webhook", "nats")
FETCH_BATCH = 1000


@dataclass(frozen=True)
class Stored:
    seq: int
    subject: str
    msg_id: str | None
    data: bytes


async def read_stream(nc: Client, stream: str, subject: str = ">") -> AsyncIterator[Stored]:
    """Every message of a stream on `subject`, in order, with an ephemeral pull consumer that acknowledges nothing.

    A pull nobody answers (503: the consumer's server went away, or its stream is electing a leader after a fault
    scenario's kill) reads on from where it stopped with a new consumer: the audit failed on one once, right after
    a leader kill, as if the scenario had lost events.
    """
    js = nc.jetstream()
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return
    last = info.state.last_seq
    next_seq = info.state.first_seq
    unanswered = 0
    while True:
        try:
            sub = await js.pull_subscribe(
                subject,
                stream=stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=next_seq,
                    ack_policy=AckPolicy.NONE,
                    inactive_threshold=120.0,
                    mem_storage=True,
                ),
            )
        except ServiceUnavailableError:
            unanswered = await _unanswered(unanswered)
            continue
        try:
            while True:
                try:
                    batch = await sub.fetch(FETCH_BATCH, timeout=5.0)
                except TimeoutError:
                    return
                except ServiceUnavailableError:
                    unanswered = await _unanswered(unanswered)
                    break
                for msg in batch:
                    meta = msg.metadata
                    next_seq = meta.sequence.stream + 1
                    yield Stored(meta.sequence.stream, msg.subject, (msg.headers or {}).get("Nats-Msg-Id"), msg.data)
                    if meta.num_pending == 0 or meta.sequence.stream >= last:
                        return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


# How many unanswered pulls in a row a read waits out (a second apart) before it fails.
UNANSWERED_PULLS = 30


async def _unanswered(count: int) -> int:
    if count >= UNANSWERED_PULLS:
        raise ServiceUnavailableError(description=f"no answer to {count} pulls in a row")
    await asyncio.sleep(1.0)
    return count + 1


@dataclass
class Stage:
    """One guarantee: each expected key once."""

    name: str
    expected: set[Any]
    found: dict[Any, list[str]] = field(default_factory=lambda: defaultdict(list))
    ignored: set[Any] = field(default_factory=set)
    """Keys outside the run (R4's patients), neither expected nor unexpected."""

    def add(self, key: Any, event_id: str) -> None:
        self.found[key].append(event_id)

    @property
    def lost(self) -> int:
        return len(self.expected - self.found.keys())

    @property
    def doubled(self) -> int:
        return sum(len(ids) - 1 for ids in self.found.values() if len(ids) > 1)

    @property
    def unexpected(self) -> int:
        return len(self.found.keys() - self.expected - self.ignored)

    def summary(self) -> dict[str, int]:
        return {
            "expected": len(self.expected),
            "lost": self.lost,
            "doubled": self.doubled,
            "unexpected": self.unexpected,
        }


@dataclass
class Delivered:
    """Notifications as one channel's receiver got them: distinct keys per referral, and re-sends of a key."""

    channel: str
    keys_by_referral: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    messages: int = 0

    def add(self, referral_id: str, key: str) -> None:
        self.keys_by_referral[referral_id].add(key)
        self.messages += 1

    def summary(self, referrals: Iterable[str]) -> dict[str, int]:
        wanted = set(referrals)
        distinct = sum(len(keys) for keys in self.keys_by_referral.values())
        return {
            "referrals": len(wanted),
            "lost": len(wanted - self.keys_by_referral.keys()),
            "duplicate_keys": sum(len(keys) - 1 for keys in self.keys_by_referral.values() if len(keys) > 1),
            "unexpected": len(self.keys_by_referral.keys() - wanted),
            "resent_same_key": self.messages - distinct,
        }


@dataclass
class Audit:
    stages: dict[str, Stage]
    webhook: Delivered
    inbox: Delivered
    referrals: set[str]
    failed_notifications: int
    log_messages: int
    unreadable: int
    dead_letters: dict[str, int]
    dispensed: Counter[str] = field(default_factory=Counter)
    """Fills recorded (`MedicationDispensed`), by patient."""

    @property
    def expected_events(self) -> int:
        return sum(len(stage.expected) for stage in self.stages.values())

    @property
    def lost(self) -> int:
        return sum(stage.lost for stage in self.stages.values())

    @property
    def doubled(self) -> int:
        return sum(stage.doubled + stage.unexpected for stage in self.stages.values())

    def notifications(self) -> dict[str, dict[str, int]]:
        return {"webhook": self.webhook.summary(self.referrals), "nats_inbox": self.inbox.summary(self.referrals)}

    @property
    def duplicate_notifications(self) -> int:
        """Referrals a physician received under more than one key (a second referral for the same recommendation
        is counted by its stage; notifications of referrals outside the run, R4's, are only reported)."""
        return sum(s["duplicate_keys"] for s in self.notifications().values())

    @property
    def lost_notifications(self) -> int:
        return sum(s["lost"] for s in self.notifications().values())

    def summary(self) -> dict[str, Any]:
        return {
            "log_messages": self.log_messages,
            "unreadable_log_messages": self.unreadable,
            "expected_events": self.expected_events,
            "lost": self.lost,
            "doubled": self.doubled,
            "stages": {name: stage.summary() for name, stage in self.stages.items()},
            "notifications": self.notifications(),
            "failed_notifications": self.failed_notifications,
            "dead_letters": self.dead_letters,
        }


async def dead_letter_counts(nc: Client) -> dict[str, int]:
    js = nc.jetstream()
    return {service: (await js.stream_info(dead_letter_stream(service))).state.messages for service in SERVICES}


async def dead_letters(nc: Client) -> list[DeadLetter]:
    letters = []
    for service in SERVICES:
        # Letters only (`mtm.dlq.<service>.<consumer>`): a redrive's record sits beside them on five tokens.
        async for stored in read_stream(nc, dead_letter_stream(service), f"{DEAD_LETTER_PREFIX}.{service}.*"):
            letters.append(DeadLetter.model_validate_json(stored.data))
    return letters


async def audit(
    nc: Client, patients: Iterable[str], receiver: WebhookReceiver | None, others: Iterable[str] = ()
) -> Audit:
    """Follow every acknowledged discharge (by patient) through the log, the receiver and the inbox.

    `others` are patients outside the run (R4 sends discharges that hostile requests act on): their discharges'
    first three stages are kept (R4 checks them), everything that happened to them afterwards is not audited.
    """
    wanted = set(patients)
    outside = set(others)
    stages = {
        name: Stage(name, set(wanted), ignored=outside)
        for name in ("discharge recorded", "medications reconciled", "review task created")
    }
    by_event = {
        "transition_of_care_recorded": "discharge recorded",
        "medications_reconciled": "medications reconciled",
        "review_task_created": "review task created",
    }
    tasks: set[str] = set()
    claims: list[tuple[str, str]] = []
    completions: list[tuple[str, str, list[str]]] = []
    referral_events: list[tuple[tuple[str, str], str, str]] = []
    requested: list[tuple[tuple[str, str], str, str]] = []
    outcomes: list[tuple[str, str]] = []
    answers: list[tuple[str, str]] = []
    failed: list[str] = []
    dispensed: Counter[str] = Counter()
    count = 0

    def read(event: Any) -> None:
        name, event_id, patient, data = event.EVENT_NAME, str(event.id), event.patient_id, event.data
        if name in by_event:
            stages[by_event[name]].add(patient, event_id)
            if name == "review_task_created" and patient in wanted:
                tasks.add(str(data.task_id))
        elif name == "medication_dispensed":
            dispensed[patient] += 1
        elif patient in outside:
            return
        elif name == "review_task_claimed":
            claims.append((str(data.task_id), event_id))
        elif name == "review_task_completed":
            prescriber = [str(r.recommendation_id) for r in data.recommendations if r.needs_prescriber]
            completions.append((str(data.task_id), event_id, prescriber))
        elif name == "referral_requested":
            key = (str(data.task_id), str(data.recommendation.recommendation_id))
            referral_events.append((key, event_id, str(data.referral_id)))
        elif name == "notification_requested":
            requested.append(((str(data.referral_id), data.channel), event_id, str(data.notification_id)))
        elif name == "notification_delivered":
            outcomes.append((str(data.notification_id), event_id))
        elif name == "notification_failed":
            failed.append(str(data.notification_id))
        elif name == "referral_answered":
            answers.append((str(data.referral_id), event_id))

    # Sealed events are opened with the keys reconciliation lends, as the services' readers open them.
    reader = EventReader(EVENTS, KeyRing(nats_key_source(nc)), EventBodies(nc))
    unreadable = 0
    batch: list[Stored] = []

    async def read_batch() -> int:
        skipped = 0
        await reader.prepare((stored.subject, stored.data) for stored in batch)
        for stored in batch:
            try:
                event, _ = await reader.read(stored.subject, stored.data)
            except ErasedPatient:
                continue  # R4 erases made-up patients only; their events are no longer anyone's to read
            except Exception as exc:
                if is_transient(exc):
                    raise  # reconciliation did not lend the keys: every count after this would be wrong
                skipped += 1  # read as the services read the log: what none of them can read, they parked (R4)
                continue
            read(event)
        batch.clear()
        return skipped

    async for stored in read_stream(nc, PATIENT_EVENTS_STREAM):
        count += 1
        batch.append(stored)
        if len(batch) >= FETCH_BATCH:
            unreadable += await read_batch()
    unreadable += await read_batch()

    claimed = stages["task claimed"] = Stage("task claimed", set(tasks))
    for task_id, event_id in claims:
        claimed.add(task_id, event_id)
    completed = stages["task completed"] = Stage("task completed", set(tasks))
    for_prescriber: set[tuple[str, str]] = set()
    for task_id, event_id, prescriber in completions:
        if task_id in tasks and task_id not in completed.found:
            for_prescriber |= {(task_id, rec) for rec in prescriber}
        completed.add(task_id, event_id)
    referred = stages["referral requested"] = Stage("referral requested", for_prescriber)
    referral_ids: set[str] = set()
    for key, event_id, referral_id in referral_events:
        if key in for_prescriber and key not in referred.found:
            referral_ids.add(referral_id)
        referred.add(key, event_id)
    notified = stages["notification requested"] = Stage(
        "notification requested", {(r, channel) for r in referral_ids for channel in CHANNELS}
    )
    notification_ids: set[str] = set()
    for key, event_id, notification_id in requested:
        if key in notified.expected and key not in notified.found:
            notification_ids.add(notification_id)
        notified.add(key, event_id)
    delivered = stages["notification delivered"] = Stage("notification delivered", notification_ids)
    for notification_id, event_id in outcomes:
        delivered.add(notification_id, event_id)
    answered = stages["referral answered"] = Stage("referral answered", set(referral_ids))
    for referral_id, event_id in answers:
        answered.add(referral_id, event_id)

    webhook = Delivered("webhook")
    if receiver is not None:
        for post in list(receiver.received):
            webhook.add(json.loads(post.body)["referral_id"], post.header(WEBHOOK_ID_HEADER))
    inbox = Delivered("nats")
    async for stored in read_stream(nc, PHYSICIAN_INBOX_STREAM):
        inbox.add(json.loads(stored.data)["referral_id"], stored.msg_id or f"seq {stored.seq}")
    return Audit(
        stages=stages,
        webhook=webhook,
        inbox=inbox,
        referrals=referral_ids,
        failed_notifications=len(failed),
        log_messages=count,
        unreadable=unreadable,
        dead_letters=await dead_letter_counts(nc),
        dispensed=dispensed,
    )
