"""Transactional outbox: events are written with the state change and relayed to JetStream with Nats-Msg-Id."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from mtm.contracts import EventEnvelope
from mtm.contracts.subjects import event_name_of_subject, event_subject
from mtm.platform import tracing
from mtm.platform.bodies import MAX_STORED_BODY_BYTES, EventBodies
from mtm.platform.crypto import Sealer
from mtm.platform.faults import TaskHealth, supervise, until_set
from mtm.platform.logging import get_logger

log = get_logger(__name__)

ENQUEUE = """
INSERT INTO outbox (subject, msg_id, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
"""
# With the headers each event is to be published with (its trace context).
ENQUEUE_WITH_HEADERS = """
INSERT INTO outbox (subject, msg_id, payload, headers)
SELECT subject, msg_id, payload, headers::jsonb
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) AS t(subject, msg_id, payload, headers)
"""
# The next rows in id order, each marked attempted (if it was not) in the same statement, which commits before any
# is sent: a row sent but never confirmed (a crash, a long outage) is looked up on the log before it is sent again
# once the server's deduplication window may have forgotten it. One round trip, not a read and then a write.
SELECT_PENDING = """
WITH pending AS (
    SELECT id, attempted_at FROM outbox ORDER BY id LIMIT $1
), marked AS (
    UPDATE outbox SET attempted_at = now()
    FROM pending WHERE outbox.id = pending.id AND pending.attempted_at IS NULL
)
SELECT o.id, o.subject, o.msg_id, o.payload, o.headers::text AS headers,
       p.attempted_at < now() - make_interval(secs => $2) AS unsure
FROM outbox o JOIN pending p USING (id) ORDER BY o.id
"""
DELETE_SENT = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
PARK_OVERSIZED = """
WITH moved AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]) RETURNING id, subject, msg_id, payload, created_at)
INSERT INTO outbox_parked (id, subject, msg_id, payload, reason, created_at)
SELECT id, subject, msg_id, payload, $2, created_at FROM moved
"""
TRY_RELAY_LOCK = "SELECT pg_try_advisory_lock($1)"
# The relay's own writes (rows marked attempted, rows deleted once confirmed) do not wait for the WAL flush. Only a
# Postgres crash can lose them (a service crash cannot), and what is lost is harmless: a row that looks never
# attempted, or not yet deleted, is sent again with its Nats-Msg-Id, dropped by the server's deduplication window
# and past it by every reader's event-id claim. The mark is made before the first send, so its flush no longer
# delays every event on its way to the log.
RELAY_SESSION = "SET synchronous_commit = off"
# How long the relay waits for the next confirm of a round: none for this long means the server lost the rest (a
# restart, a stream leader killed mid-round), and the unconfirmed rows are sent again (deduplicated). A slow server
# still confirming a long round keeps it going.
CONFIRM_STALL_S = 3.0
# Room for headers beside a payload that must fit in one NATS message.
PAYLOAD_HEADROOM = 4 * 1024
RELAY_LOCK_KEY = 7_320_002
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class OutgoingMessage:
    subject: str
    msg_id: str
    payload: bytes
    headers: Mapping[str, str] | None = None
    """Published with the message besides its id: the trace context of the step that decided it."""

    @classmethod
    def of_event(
        cls, event: EventEnvelope, body: str | None = None, headers: Mapping[str, str] | None = None
    ) -> OutgoingMessage:
        """The event on its patient subject; pass `body` when the event was serialized already (e.g. to store it)."""
        return cls(
            subject=event_subject(event),
            msg_id=str(event.id),
            payload=(body if body is not None else event.model_dump_json()).encode(),
            headers=headers or None,
        )


async def enqueue(conn: asyncpg.Connection, messages: Sequence[OutgoingMessage]) -> None:
    """Add messages to the outbox inside the caller's transaction."""
    if not messages:
        return
    columns = ([m.subject for m in messages], [m.msg_id for m in messages], [m.payload for m in messages])
    if any(m.headers for m in messages):
        await conn.execute(
            ENQUEUE_WITH_HEADERS, *columns, [json.dumps(dict(m.headers)) if m.headers else None for m in messages]
        )
    else:
        await conn.execute(ENQUEUE, *columns)


async def enqueue_events(conn: asyncpg.Connection, events: Sequence[EventEnvelope]) -> None:
    await enqueue(conn, [OutgoingMessage.of_event(e) for e in events])


async def _confirmed(futures: Sequence[asyncio.Future[Any]]) -> list[Any] | None:
    """Each publish's confirm or error, in order; None when confirms stopped coming (the rest are given up)."""
    pending = set(futures)
    while pending:
        done, pending = await asyncio.wait(pending, timeout=CONFIRM_STALL_S)
        if not done:
            for future in pending:
                future.cancel()
            return None
    return [asyncio.CancelledError() if f.cancelled() else (f.exception() or f.result()) for f in futures]


class OutboxRelay:
    """Publishes outbox rows in id order with publisher confirms windowed, then deletes what the server confirmed.

    One relay per service database holds an advisory lock, so a second replica waits as a standby and
    per-patient order is kept. Re-sends after a crash are dropped by the server's Nats-Msg-Id dedup window.
    A row whose stored form is too large for one message goes to the object store (`bodies`) just before its
    reference is published in its place; only a row past what the object store keeps for one event is set aside.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        *,
        poll_s: float,
        batch_size: int = 1000,
        stored: Callable[[str, str], Awaitable[bool]] | None = None,
        trust_dedup_s: float = 300.0,
        max_payload: int = 1024 * 1024,
        sealer: Sealer | None = None,
        bodies: EventBodies | None = None,
    ) -> None:
        self._pool = pool
        self._bodies = bodies
        self._js = js
        self._stored = stored
        self._max_payload = max_payload
        self._sealer = sealer
        self.health = TaskHealth("outbox-relay")
        self._trust_dedup_s = trust_dedup_s
        self._poll_s = poll_s
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(
            supervise("outbox-relay", self._run, self.health, self._stopping), name="outbox-relay"
        )

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, health: TaskHealth) -> None:
        """Hold the relay lock and relay until stopped; any failure ends the run and the supervisor restarts it.

        The lock lives on the connection the relay works on: if that connection is lost, so is the lock (another
        replica may take over), and the round that fails on it ends the run before anything more is sent.
        """
        async with self._pool.acquire() as lock_conn:
            while not await lock_conn.fetchval(TRY_RELAY_LOCK, RELAY_LOCK_KEY):
                health.ok()
                # A standby ends when stopped, not only when cancelled (a cancellation can be lost on its way in).
                await until_set(self._poll_s * 4, self._stopping)
                if self._stopping.is_set():
                    return
            try:
                await lock_conn.execute(RELAY_SESSION)
                self._conn = lock_conn
                while not self._stopping.is_set():
                    # Cleared before the round, not after it: a commit that wakes the relay while it sends must
                    # get its rows sent by the next round, not by the next poll up to `poll_s` later.
                    self._wake.clear()
                    sent = await self.relay_once()
                    health.ok()
                    if sent >= self._batch_size:
                        continue
                    await until_set(self._poll_s, self._wake, self._stopping)
            finally:
                self._conn = None
                with contextlib.suppress(Exception):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK_KEY)

    async def relay_once(self) -> int:
        """One round: the next rows sent, confirmed and deleted (on the lock's connection while the relay runs)."""
        if self._conn is not None:
            return await self._relay_on(self._conn)
        async with self._pool.acquire() as conn:
            return await self._relay_on(conn)

    async def _relay_on(self, conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(SELECT_PENDING, self._batch_size, self._trust_dedup_s)
        if not rows:
            return 0
        bodies = await self._stored_forms(rows)
        # What the log would store is what must fit: a sealed event is a third larger than its clear row. Past
        # one message it goes to the object store; past what that keeps for one event (or with no store) it
        # could never be sent.
        limit = MAX_STORED_BODY_BYTES if self._bodies is not None else self._max_payload - PAYLOAD_HEADROOM
        too_large = {row["id"] for row, body in zip(rows, bodies, strict=True) if body and len(body) > limit}
        if too_large:
            await self._park(conn, [row for row in rows if row["id"] in too_large])
            kept = [(row, body) for row, body in zip(rows, bodies, strict=True) if row["id"] not in too_large]
            rows, bodies = [row for row, _ in kept], [body for _, body in kept]
        spans = [self._publish_span(row) for row in rows] if tracing.enabled() else [None] * len(rows)
        futures = [await self._send(row, body, span) for row, body, span in zip(rows, bodies, spans, strict=True)]
        results = await _confirmed(futures)
        if results is None:
            log.warning("outbox publish confirms stalled; will send again", count=len(rows))
            _end(spans, TimeoutError("publish confirms stalled"))
            return 0
        for span, result in zip(spans, results, strict=True):
            _end([span], result if isinstance(result, BaseException) else None)
        confirmed: list[int] = []
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("outbox publish not confirmed", subject=row["subject"], error_type=type(result).__name__)
                break
            confirmed.append(row["id"])
        await conn.execute(DELETE_SENT, confirmed)
        self.published += len(confirmed)
        return len(confirmed)

    async def _park(self, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> None:
        """Rows the server cannot take would stop every later event of the service: set them aside, loudly."""
        limit = MAX_STORED_BODY_BYTES if self._bodies is not None else self._max_payload
        reason = f"payload larger than the log keeps for one event ({limit} bytes)"
        await conn.execute(PARK_OVERSIZED, [row["id"] for row in rows], reason)
        for row in rows:
            log.error("outbox row parked: too large for the log", subject=row["subject"], count=len(row["payload"]))

    async def _stored_forms(self, rows: Sequence[asyncpg.Record]) -> list[bytes | None]:
        """What the log stores for each row: sealed with its patient's key (None: the patient was erased)."""
        if self._sealer is None:
            return [bytes(row["payload"]) for row in rows]
        await self._sealer.prepare(row["subject"] for row in rows)
        return [await self._sealer.seal(row["subject"], bytes(row["payload"])) for row in rows]

    @staticmethod
    def _publish_span(row: asyncpg.Record) -> Any:
        """The publish step of the event's flow, a child of the step that decided it (none if it has no trace)."""
        stored = json.loads(row["headers"]) if row["headers"] else None
        if not stored:
            return None
        name = event_name_of_subject(row["subject"])
        return tracing.start(
            f"publish {name}",
            kind=tracing.PRODUCER,
            headers=stored,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.destination.template": tracing.subject_template(row["subject"]),
                "messaging.message.id": row["msg_id"],
                "mtm.event_type": name,
            },
        )

    async def _send(self, row: asyncpg.Record, body: bytes | None, span: Any = None) -> asyncio.Future[Any]:
        skip = body is None
        if skip:
            log.info("outbox row of an erased patient dropped", subject=row["subject"])
        elif row["unsure"] and self._stored is not None and await self._stored(row["subject"], row["msg_id"]):
            log.info("outbox row already on the log; not sent again", subject=row["subject"])
            skip = True
        if skip or body is None:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        if len(body) > self._max_payload - PAYLOAD_HEADROOM and self._bodies is not None:
            # Stored (and confirmed) before its reference is published: the log never names a body not there.
            body = await self._bodies.store(row["msg_id"], body)
        headers = {MSG_ID_HEADER: row["msg_id"]}
        if span is not None:
            headers.update(tracing.headers_for(span.get_span_context()))
        elif row["headers"]:
            headers.update(json.loads(row["headers"]))
        return await self._js.publish_async(row["subject"], body, headers=headers)


def _end(spans: Sequence[Any], exc: BaseException | None) -> None:
    for span in spans:
        if span is None:
            continue
        if exc is not None:
            tracing.failed(span, exc)
        span.end()
