"""Transactional outbox: events are written with the state change and relayed to JetStream with Nats-Msg-Id."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from mtm.contracts import EventEnvelope
from mtm.contracts.subjects import event_subject
from mtm.platform.logging import get_logger

log = get_logger(__name__)

ENQUEUE = """
INSERT INTO outbox (subject, msg_id, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
"""
SELECT_PENDING = """
SELECT id, subject, msg_id, payload, attempted_at < now() - make_interval(secs => $2) AS unsure
FROM outbox ORDER BY id LIMIT $1
"""
MARK_ATTEMPTED = "UPDATE outbox SET attempted_at = now() WHERE id = ANY($1::bigint[]) AND attempted_at IS NULL"
DELETE_SENT = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"
TRY_RELAY_LOCK = "SELECT pg_try_advisory_lock($1)"
RELAY_LOCK_KEY = 7_320_002
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class OutgoingMessage:
    subject: str
    msg_id: str
    payload: bytes

    @classmethod
    def of_event(cls, event: EventEnvelope, body: str | None = None) -> OutgoingMessage:
        """The event on its patient subject; pass `body` when the event was serialized already (e.g. to store it)."""
        return cls(
            subject=event_subject(event),
            msg_id=str(event.id),
            payload=(body if body is not None else event.model_dump_json()).encode(),
        )


async def enqueue(conn: asyncpg.Connection, messages: Sequence[OutgoingMessage]) -> None:
    """Add messages to the outbox inside the caller's transaction."""
    if not messages:
        return
    await conn.execute(
        ENQUEUE,
        [m.subject for m in messages],
        [m.msg_id for m in messages],
        [m.payload for m in messages],
    )


async def enqueue_events(conn: asyncpg.Connection, events: Sequence[EventEnvelope]) -> None:
    await enqueue(conn, [OutgoingMessage.of_event(e) for e in events])


class OutboxRelay:
    """Publishes outbox rows in id order with publisher confirms windowed, then deletes what the server confirmed.

    One relay per service database holds an advisory lock, so a second replica waits as a standby and
    per-patient order is kept. Re-sends after a crash are dropped by the server's Nats-Msg-Id dedup window.
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
    ) -> None:
        self._pool = pool
        self._js = js
        self._stored = stored
        self._trust_dedup_s = trust_dedup_s
        self._poll_s = poll_s
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with self._pool.acquire() as lock_conn:
            while not await lock_conn.fetchval(TRY_RELAY_LOCK, RELAY_LOCK_KEY):  # noqa: ASYNC110 - polls Postgres
                await asyncio.sleep(self._poll_s * 4)
            while not self._stopping:
                try:
                    sent = await self.relay_once()
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    log.warning("outbox relay failed; will retry", error_type=type(exc).__name__)
                    await asyncio.sleep(self._poll_s)
                    continue
                if sent >= self._batch_size:
                    continue
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)

    async def relay_once(self) -> int:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(SELECT_PENDING, self._batch_size, self._trust_dedup_s)
            if not rows:
                return 0
            # Remembered before sending: a row sent but never confirmed (a crash, a long outage) is looked up on
            # the log before it is sent again once the server's deduplication window may have forgotten it.
            await conn.execute(MARK_ATTEMPTED, [row["id"] for row in rows])
            futures = [await self._send(row) for row in rows]
            results = await asyncio.gather(*futures, return_exceptions=True)
            confirmed: list[int] = []
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning(
                        "outbox publish not confirmed", subject=row["subject"], error_type=type(result).__name__
                    )
                    break
                confirmed.append(row["id"])
            await conn.execute(DELETE_SENT, confirmed)
        self.published += len(confirmed)
        return len(confirmed)

    async def _send(self, row: asyncpg.Record) -> asyncio.Future[Any]:
        if row["unsure"] and self._stored is not None and await self._stored(row["subject"], row["msg_id"]):
            log.info("outbox row already on the log; not sent again", subject=row["subject"])
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        return await self._js.publish_async(row["subject"], row["payload"], headers={MSG_ID_HEADER: row["msg_id"]})
