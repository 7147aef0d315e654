"""Live updates: the web app follows the patient log and pushes changes to browsers with server-sent events.

One core NATS subscription per watched event type feeds every open event stream of this process. Each stream
belongs to a signed-in person and a view (the worklist with its filters, a task, the inbox, a referral): for an
event that concerns the view it asks the services for the changed row or section as that person, waiting until
their tables show the change (commands reach the log before the projections apply them), renders it and sends
it. Browsers only swap what they receive; nothing is sent that the person could not open as a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from mtm.contracts import (
    EVENTS,
    EventEnvelope,
    EventRegistry,
    NotificationFailed,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    ReferralRequested,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskCreated,
    ReviewTaskReassigned,
    ReviewTaskReleased,
)
from mtm.contracts.events import PatientErased
from mtm.contracts.subjects import event_filter
from mtm.platform.bodies import EventBodies
from mtm.platform.crypto import ErasedPatient, KeyRing
from mtm.platform.keys import hear_keys, nats_key_source
from mtm.platform.logging import get_logger
from mtm.platform.reading import EventReader

log = get_logger(__name__)
WATCHED: tuple[type[EventEnvelope], ...] = (
    ReviewTaskCreated,
    ReviewTaskClaimed,
    ReviewTaskCompleted,
    ReviewTaskReleased,
    ReviewTaskReassigned,
    ReferralRequested,
    ReferralAcknowledged,
    ReferralAnswered,
    ReferralEscalated,
    NotificationFailed,
)
TASK_EVENTS = (ReviewTaskCreated, ReviewTaskClaimed, ReviewTaskCompleted, ReviewTaskReleased, ReviewTaskReassigned)
REFERRAL_EVENTS = (ReferralRequested, ReferralAcknowledged, ReferralAnswered, ReferralEscalated, NotificationFailed)
QUEUE_SIZE = 1000
# Events received but not yet opened, and how many are opened with one key request.
RECEIVED_SIZE = 50_000
OPEN_BATCH = 500
PING_EVERY_S = 15.0


@dataclass(frozen=True)
class Change:
    """An event of the log as a view sees it, with when this process opened it."""

    event: EventEnvelope
    received: float

    @property
    def task_id(self) -> str | None:
        value = getattr(self.event.data, "task_id", None)
        return str(value) if value is not None else None

    @property
    def referral_id(self) -> str | None:
        value = getattr(self.event.data, "referral_id", None)
        return str(value) if value is not None else None

    @property
    def physician_id(self) -> str | None:
        data = self.event.data
        return getattr(data, "physician_id", None) or getattr(data, "recipient_id", None)

    def about_tasks(self) -> bool:
        return isinstance(self.event, TASK_EVENTS)

    def about_referrals(self) -> bool:
        return isinstance(self.event, REFERRAL_EVENTS)


class LiveFeed:
    """Every watched event of the log, opened once per process and handed to each open event stream.

    Events are received on core NATS and opened by one reader task in batches: the keys of a batch's patients
    come in one request, so a burst of thousands of events (a hospital's morning discharges) costs a handful of
    key requests rather than one each, and the feed keeps up instead of showing changes seconds late; the keys the
    keeper announces as it makes them need no request at all. With no stream open, nothing is opened at all.
    """

    def __init__(self, nc: Client, registry: EventRegistry = EVENTS) -> None:
        self._nc = nc
        # Events on the log are sealed under their patient's key: the feed opens them as services do, with keys
        # from the key keeper (reconciliation), cached, and those it announces as it makes them (`start`).
        self._reader = EventReader(registry, KeyRing(nats_key_source(nc)), EventBodies(nc))
        self._listeners: set[asyncio.Queue[Change | None]] = set()
        self._subscriptions: list[Any] = []
        # None: the feed is stopping (it wakes the reader task).
        self._received: asyncio.Queue[Msg | None] = asyncio.Queue(RECEIVED_SIZE)
        self._opener: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0

    async def start(self) -> None:
        self._opener = asyncio.create_task(self._open_received(), name="live-feed")
        # Heard before any event: a new patient's key is announced just before their first events, which the feed
        # then opens without asking the keeper (a request per new patient in a burst of discharges).
        self._subscriptions.append(await hear_keys(self._nc, self._reader.keyring))
        self._subscriptions.append(await self._nc.subscribe(event_filter(PatientErased), cb=self._on_erased))
        for cls in WATCHED:
            self._subscriptions.append(await self._nc.subscribe(event_filter(cls), cb=self._on_message))
        # Started means heard: until the server has the subscriptions, a key announced meanwhile is missed, and the
        # patient's next events wait on a request to the keeper (a test publishing right after start failed so in CI).
        await self._nc.flush()

    async def stop(self) -> None:
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        # The reader task ends on this too, not only when cancelled: a cancellation lost on its way in (Python 3.11's
        # `wait_for`, in a key request) would leave it waiting for events that no longer come, and this stop with it.
        self._stopping = True
        with contextlib.suppress(asyncio.QueueFull):  # full: the reader finds the flag after its next batch
            self._received.put_nowait(None)
        if self._opener is not None:
            self._opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._opener
        for queue in list(self._listeners):
            if queue.full():  # a stream that does not keep up misses a change rather than its end
                queue.get_nowait()
            queue.put_nowait(None)

    async def _on_message(self, msg: Msg) -> None:
        if not self._listeners:
            return
        try:
            self._received.put_nowait(msg)
        except asyncio.QueueFull:  # far behind: views miss this change rather than the process growing
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("live feed behind; changes dropped", dropped=self.dropped)

    async def _on_erased(self, msg: Msg) -> None:
        try:
            erased, _ = await self._reader.read(msg.subject, msg.data)
        except Exception as exc:
            log.warning("erasure unreadable", error_type=type(exc).__name__)
            return
        for queue in list(self._listeners):
            _drop_patient(queue, erased.patient_id)

    async def _open_received(self) -> None:
        while not self._stopping:
            batch = [await self._received.get()]
            while len(batch) < OPEN_BATCH and not self._received.empty():
                batch.append(self._received.get_nowait())
            if self._stopping:
                return
            if not self._listeners:
                continue
            try:
                await self._open(batch)
            except Exception as exc:  # the feed must outlive any batch (the key keeper away, say)
                log.warning("live feed batch not opened", count=len(batch), error_type=type(exc).__name__)

    async def _open(self, batch: list[Msg]) -> None:
        with contextlib.suppress(Exception):  # keys asked for one by one on reading when the batch request fails
            await self._reader.prepare((msg.subject, msg.data) for msg in batch)
        for msg in batch:
            try:
                event, _ = await self._reader.read(msg.subject, msg.data)
            except ErasedPatient:
                continue
            except Exception as exc:  # one unreadable event (or the key keeper away) must not end the feed
                log.warning("unreadable event on the log", subject=msg.subject, error_type=type(exc).__name__)
                continue
            change = Change(event, time.monotonic())
            for queue in list(self._listeners):
                if queue.full():  # a stream that does not keep up misses changes rather than holding others back
                    continue
                queue.put_nowait(change)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[Change | None]]:
        queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_SIZE)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    @property
    def keyring(self) -> KeyRing:
        """The patients' keys the feed holds: asked for or announced, an erased patient's forgotten."""
        return self._reader.keyring


def _drop_patient(queue: asyncio.Queue[Change | None], patient_id: str) -> None:
    """Take an erased patient's changes out of a stream's queue, the others left in their order."""
    kept = [item for item in (queue.get_nowait() for _ in range(queue.qsize())) if not _of(item, patient_id)]
    for item in kept:
        queue.put_nowait(item)


def _of(item: Change | None, patient_id: str) -> bool:
    return item is not None and item.event.patient_id == patient_id


Message = tuple[str, dict[str, Any]]
Render = Callable[[Change], "AsyncIterator[Message]"]
Snapshot = Callable[[], "AsyncIterator[Message]"]


def sse(event: str, data: dict[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


async def stream(feed: LiveFeed, render: Render, snapshot: Snapshot | None = None) -> AsyncIterator[bytes]:
    """An event stream: `ready`, then the view as it is now (`snapshot`: what changed between the page being
    rendered and the stream listening is not missed), then what `render` makes of each change, and a comment now
    and then so proxies keep the connection open."""
    with feed.listen() as queue:
        yield sse("ready", {})
        if snapshot is not None:
            async for name, data in snapshot():
                yield sse(name, data)
        while True:
            try:
                change = await asyncio.wait_for(queue.get(), timeout=PING_EVERY_S)
            except TimeoutError:
                yield b": ping\n\n"
                continue
            if change is None:
                return
            try:
                async for name, data in render(change):
                    yield sse(name, data)
            except Exception as exc:  # one change that cannot be shown must not end the stream
                log.warning("live update failed", event_type=change.event.EVENT_NAME, error_type=type(exc).__name__)


def reflected(change: Change) -> Callable[[Any], bool]:
    """Whether a reply about the changed task or referral already shows the change (the service applied it)."""
    event = change.event

    def shows(reply: Any) -> bool:
        if not reply.ok:
            return False
        data = reply.data or {}
        if isinstance(event, ReviewTaskClaimed):
            return data.get("status") in ("in-progress", "completed")
        if isinstance(event, ReviewTaskCompleted):
            return data.get("status") == "completed"
        if isinstance(event, ReviewTaskReleased):
            # Released, or moved on since (claimed again, completed): either way past this release.
            return data.get("owner") != event.data.pharmacist_id or data.get("status") != "in-progress"
        if isinstance(event, ReviewTaskReassigned):
            return data.get("owner") == event.data.to_pharmacist_id or data.get("status") == "completed"
        if isinstance(event, ReferralAcknowledged):
            return bool(data.get("acknowledged_at"))
        if isinstance(event, ReferralAnswered):
            return data.get("status") != "requested"
        if isinstance(event, ReferralEscalated):
            return int(data.get("escalations") or 0) >= event.data.escalation
        if isinstance(event, NotificationFailed):
            return bool(data.get("notification_failures"))
        return True

    return shows
