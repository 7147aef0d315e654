"""Rebuild a projection from the log into a fresh schema while the service runs, then swap it in atomically."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from mtm.contracts import EventEnvelope
from mtm.contracts.admin import RebuildPhase
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter
from mtm.platform.crypto import ErasedPatient
from mtm.platform.db import apply_schema_migrations
from mtm.platform.faults import is_transient
from mtm.platform.logging import get_logger
from mtm.platform.projection import (
    LIVE_SCHEMA,
    LOCK_AS_SWAPPER,
    REBUILD_SCHEMA,
    WRITER_LOCK_KEY,
    Kept,
    Projection,
    Tx,
    apply_events,
)
from mtm.platform.pulling import Puller, puller
from mtm.platform.reading import EventReader

log = get_logger(__name__)

REBUILD_LOCK_KEY = 7_320_004
RETIRED_SCHEMA = "projection_retired"
APPLY_BATCH = 2000
# An abandoned reader's consumer (a crashed rebuild) is removed by the server after this long.
READER_IDLE_S = 120.0
PROGRESS_EVERY_S = 0.5
# How long the swap waits, holding every writer off, for the outbox to reach the log.
OUTBOX_DRAIN_TIMEOUT_S = 30.0
SWAP_ATTEMPTS = 5
OUTBOX_EMPTY = "SELECT NOT EXISTS (SELECT 1 FROM public.outbox)"
# A replay holds two batches of parsed events (about 65 tracked objects each) alive at a time, all freed by
# reference counting: with the service's first-generation threshold (50,000) the collector ran every few hundred
# events and rescanned them, a third of the rebuild's CPU. Above what a replay holds, it finds nothing to do.
REBUILD_GC_GEN0 = 2_000_000
Progress = Callable[[RebuildPhase, int, int, float, str], Awaitable[None]]
# A stored message read: its event and clear JSON, or None for an erased patient's event (skipped by everyone).
Read = tuple[EventEnvelope, bytes] | None
Decode = Callable[[Sequence[Msg]], Awaitable[list[Read]]]


class RebuildBusy(RuntimeError):
    """Another rebuild of this service's projection is running."""


@dataclass(frozen=True)
class RebuildResult:
    applied: int
    read: int
    seconds: float
    unreadable: int = 0
    """Events on the log no reader can read (the live consumers parked each with its reason); skipped here too."""

    @property
    def events_per_s(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


async def _no_progress(*_: object) -> None:
    return None


class _StartOver(Exception):
    """The swap failed after the tail was taken from the reader: the replay must begin again from the start."""


START_OVER_ATTEMPTS = 3


class LogReader:
    """Every stored event of the given types in log order, pulled in batches by an ephemeral consumer and read.

    Pulling is the backpressure: the server sends only what was asked for, so a log larger than memory streams
    through. The consumer acknowledges nothing (nothing is redelivered to it) and is dropped by the server once
    the reader is gone. The batch after the one taken is fetched and read (opened and parsed, the larger part of
    a rebuild's CPU) while the caller waits on the database with the one it took.

    Messages come through a `Puller` (a subscription callback rather than nats-py's `fetch`, whose task per
    message cost about as much as the rest of reading a message).
    """

    def __init__(self, js: JetStreamContext, types: Sequence[type[EventEnvelope]], name: str, decode: Decode) -> None:
        self._js = js
        self._name = name
        self._filters = sorted({event_filter(cls) for cls in types})
        self._decode = decode
        self._puller: Puller | None = None
        self._ahead: asyncio.Task[list[tuple[Msg, Read]]] | None = None
        self._buffer: list[tuple[Msg, Read]] = []
        self.delivered = 0
        self.last_seq = 0
        """Stream sequence of the last message taken: everything matching up to it has been taken."""

    async def start(self) -> int:
        """Start reading; returns how many matching events the log holds now.

        The reader has a fixed name per service (its user may create no other consumer); one left by a rebuild
        that crashed is deleted first, or its position would be taken over.
        """
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(PATIENT_EVENTS_STREAM, self._name)
        filters = self._filters
        await self._js.add_consumer(
            PATIENT_EVENTS_STREAM,
            ConsumerConfig(
                name=self._name,
                filter_subject=filters[0] if len(filters) == 1 else None,
                filter_subjects=filters if len(filters) > 1 else None,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=READER_IDLE_S,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        self._puller = await puller(self._js, stream=PATIENT_EVENTS_STREAM, durable=self._name)
        return await self.pending_on_server()

    async def pending_on_server(self) -> int:
        info = await self._js.consumer_info(PATIENT_EVENTS_STREAM, self._name)
        return int(info.num_pending or 0)

    async def _fetch(self, limit: int, wait_s: float) -> list[tuple[Msg, Read]]:
        assert self._puller is not None
        messages = await self._puller.pull(limit, None) or await self._puller.pull(limit, wait_s)
        if not messages:
            return []
        return list(zip(messages, await self._decode(messages), strict=True))

    async def _settle(self) -> None:
        """Wait for the batch being fetched ahead, into the buffer."""
        if self._ahead is not None:
            self._buffer.extend(await self._ahead)
            self._ahead = None

    async def take(self, limit: int, wait_s: float) -> list[tuple[Msg, Read]]:
        """The next batch; the one after it is already being fetched while the caller applies this one."""
        await self._settle()
        taken = self._buffer or await self._fetch(limit, wait_s)
        self._buffer = []
        self._ahead = asyncio.create_task(self._fetch(limit, wait_s))
        self.delivered += len(taken)
        if taken:
            self.last_seq = taken[-1][0].metadata.sequence.stream
        return taken

    async def caught_up_to(self, seq: int) -> bool:
        """Whether every matching message up to stream sequence `seq` has been taken (in order, so one past it
        proves it; with none past it, neither the server, nor the batch fetched ahead, nor the connection may
        hold any)."""
        if self.last_seq >= seq:
            return True
        await self._settle()
        if self._buffer:
            return False
        info = await self._js.consumer_info(PATIENT_EVENTS_STREAM, self._name)
        # A pull that timed out on our side may still be served: the server counts what it sent as delivered
        # (not pending) while it is on its way to us, or waiting in the subscription for the next fetch. Nothing
        # is redelivered to this consumer, so its delivered count is exactly what it sent us.
        sent = int(info.delivered.consumer_seq or 0) if info.delivered is not None else 0
        return sent <= self.delivered and int(info.num_pending or 0) == 0

    async def stop(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            await asyncio.gather(self._ahead, return_exceptions=True)
        if self._puller is not None:
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(PATIENT_EVENTS_STREAM, self._name)
            await self._puller.unsubscribe()


@contextlib.contextmanager
def _collecting_less() -> Iterator[None]:
    """The cyclic collector's first generation raised for the rebuild (process-wide: the service's handlers run
    beside it, and their cyclic garbage is collected later, not never)."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], REBUILD_GC_GEN0), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class Rebuilder:
    """Replays the log into `projection_rebuild`, catches up with the live tail, and swaps it in.

    The live tables keep answering queries and taking writes until the swap. The swap holds the projection's
    writer lock exclusively (every live writer holds it shared), waits until the outbox reached the log (so
    every event the service decided is on the log), applies the last events, and renames the schemas in one
    transaction. Nothing is published: the rebuild only reads the log.
    """

    def __init__(
        self,
        *,
        database_url: str,
        js: JetStreamContext,
        projection: Projection,
        scopes: Sequence[tuple[str, Traversable]],
        reader: EventReader,
        reader_name: str,
        progress: Progress = _no_progress,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._url = database_url
        self._stopping = stopping
        self._js = js
        self._reader_name = reader_name
        self._projection = projection
        self._scopes = scopes
        self._reader = reader
        self._progress = progress
        self.unreadable = 0
        self._kept = Kept()

    async def run(self) -> RebuildResult:
        with _collecting_less():
            for attempt in range(1, START_OVER_ATTEMPTS + 1):
                try:
                    return await self._run_once()
                except _StartOver as exc:
                    log.warning("rebuild starting over", attempt=attempt, error_type=type(exc.__cause__).__name__)
        raise TimeoutError(f"could not swap the rebuilt projection in after {START_OVER_ATTEMPTS} replays")

    async def _run_once(self) -> RebuildResult:
        started = time.monotonic()
        self.unreadable = 0
        self._kept = Kept()
        conn = await asyncpg.connect(self._url, timeout=10)
        reader = LogReader(self._js, self._projection.replayed, self._reader_name, self._read)
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK_KEY):
                raise RebuildBusy("a rebuild of this projection is already running")
            await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
            async with conn.transaction():
                await apply_schema_migrations(conn, REBUILD_SCHEMA, self._scopes)
            total = await reader.start()
            await self._progress("started", 0, total, 0.0, "")
            applied = await self._replay(conn, reader, total, started)
            applied += await self._swap(conn, reader, started)
            await self._drop_retired()
            seconds = time.monotonic() - started
            result = RebuildResult(applied, reader.delivered, seconds, self.unreadable)
            note = (
                f"{self.unreadable} unreadable events skipped (parked by the live consumers)" if self.unreadable else ""
            )
            await self._progress("swapped", reader.delivered, reader.delivered, result.events_per_s, note)
            log.info(
                "projection rebuilt",
                count=reader.delivered,
                applied=applied,
                parked=self.unreadable,
                elapsed_ms=int(seconds * 1000),
            )
            return result
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute(f"DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE")
            raise
        finally:
            await reader.stop()
            await conn.close()

    def _go_on(self) -> None:
        """A rebuild stopped with its service ends at its next batch as if its task's cancellation had arrived, also
        when that was lost on its way in (Python 3.11's `wait_for`, under a pull or a nats-py request): it would
        otherwise replay and swap to its end, the service's stop waiting for it."""
        if self._stopping is not None and self._stopping.is_set():
            raise asyncio.CancelledError

    async def _read(self, messages: Sequence[Msg]) -> list[Read]:
        try:
            await self._reader.prepare((m.subject, m.data) for m in messages)
        except Exception as exc:
            if is_transient(exc):
                raise
            # As the live consumers do: one event may break the batch's key request; each is then read on its own.
            log.warning("batch preparation failed; reading each event on its own", error_type=type(exc).__name__)
        read: list[Read] = []
        for message in messages:
            try:
                read.append(await self._reader.read(message.subject, message.data))
            except ErasedPatient:
                read.append(None)  # an erased patient's events are no longer read, by a rebuild or by anyone
            except Exception as exc:
                if is_transient(exc):
                    raise  # the key keeper or NATS is away: the event is readable, skipping it would lose it
                # No reader can read it, so the live consumers parked it and no table ever applied it: the rebuilt
                # tables skip it too, instead of the whole rebuild (or a new replica's first start) failing on it.
                self.unreadable += 1
                log.warning(
                    "unreadable event skipped",
                    subject=message.subject,
                    stream_seq=message.metadata.sequence.stream,
                    error_type=type(exc).__name__,
                )
                read.append(None)
        return read

    async def _apply(self, conn: asyncpg.Connection, batch: Sequence[tuple[Msg, Read]]) -> int:
        # Only this rebuild writes the new schema: what the projection wrote, it may keep instead of reading back.
        tx = Tx(conn, self._kept)
        events = []
        for _, read in batch:
            if read is not None:
                event, clear = read
                tx.remember(event, clear)
                events.append(event)
        return await apply_events(tx, self._projection, events)

    async def _write_kept(self, conn: asyncpg.Connection) -> None:
        """Write what the projection kept unwritten (in the schema on the connection's search path)."""
        write = self._projection.write_kept
        unwritten = self._kept.take_unwritten()
        if write is None or not unwritten:
            return
        tx = Tx(conn, self._kept)
        for start in range(0, len(unwritten), APPLY_BATCH):
            await write(tx, unwritten[start : start + APPLY_BATCH])

    async def _replay(self, conn: asyncpg.Connection, reader: LogReader, total: int, started: float) -> int:
        """Apply batches until the reader has everything the log held when this phase began (more may arrive),
        then write what the projection kept unwritten, so the swap's tail holds writers off only for its own."""
        applied = await self._replay_batches(conn, reader, total, started)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL search_path TO {REBUILD_SCHEMA}, public")
            await self._write_kept(conn)
        return applied

    async def _replay_batches(self, conn: asyncpg.Connection, reader: LogReader, total: int, started: float) -> int:
        """Apply batches until the reader has everything the log held when this phase began."""
        target = await self._log_end()
        applied = 0
        last_report = 0.0
        while True:
            self._go_on()
            batch = await reader.take(APPLY_BATCH, wait_s=0.2)
            if batch:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {REBUILD_SCHEMA}, public")
                    applied += await self._apply(conn, batch)
                if reader.last_seq >= target:
                    return applied
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                rate = reader.delivered / (now - started) if now > started else 0.0
                total = max(total, reader.delivered + await reader.pending_on_server())
                await self._progress("replaying", reader.delivered, total, rate, "")
            if not batch and await reader.caught_up_to(target):
                return applied

    async def _swap(self, conn: asyncpg.Connection, reader: LogReader, started: float) -> int:
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            await self._progress("catching-up", reader.delivered, reader.delivered, 0.0, f"swap attempt {attempt}")
            tail_taken = False
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '30s'")
                    await conn.execute(LOCK_AS_SWAPPER, WRITER_LOCK_KEY)
                    if not await self._outbox_drained(conn):
                        raise TimeoutError("the outbox did not reach the log")
                    # Everything that may wait on a lock comes before the tail: what the reader hands over cannot
                    # be read again, so once it is taken the swap must commit or the rebuild start over.
                    await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE")
                    tail_taken = True
                    applied = await self._apply_tail(conn, reader)
                    await conn.execute(f"ALTER SCHEMA {LIVE_SCHEMA} RENAME TO {RETIRED_SCHEMA}")
                    await conn.execute(f"ALTER SCHEMA {REBUILD_SCHEMA} RENAME TO {LIVE_SCHEMA}")
                return applied
            except (TimeoutError, asyncpg.LockNotAvailableError) as exc:
                if tail_taken:
                    raise _StartOver("the swap failed after the tail was read") from exc
                log.warning("rebuild swap postponed", attempt=attempt, error_type=type(exc).__name__)
                await self._replay(conn, reader, reader.delivered, started)
        raise TimeoutError(f"could not swap the rebuilt projection in after {SWAP_ATTEMPTS} attempts")

    async def _outbox_drained(self, conn: asyncpg.Connection) -> bool:
        deadline = time.monotonic() + OUTBOX_DRAIN_TIMEOUT_S
        while not await conn.fetchval(OUTBOX_EMPTY):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _apply_tail(self, conn: asyncpg.Connection, reader: LogReader) -> int:
        """With writers held off and the outbox on the log: everything the log holds now goes into the new tables.

        Commands may still append meanwhile (they do not write tables); what lands after `end` is applied by the
        projection's own consumer after the swap, and skipped there if it made it in here too.
        """
        await conn.execute(f"SET LOCAL search_path TO {REBUILD_SCHEMA}, public")
        end = await self._log_end()
        applied = 0
        while True:
            self._go_on()
            batch = await reader.take(APPLY_BATCH, wait_s=0.05)
            if batch:
                applied += await self._apply(conn, batch)
                # Under steady traffic a batch is never empty: one past `end` proves the tail is in (as in _replay).
                if reader.last_seq >= end:
                    break
            elif await reader.caught_up_to(end):
                break
        await self._write_kept(conn)
        return applied

    async def _log_end(self) -> int:
        return int((await self._js.stream_info(PATIENT_EVENTS_STREAM)).state.last_seq)

    async def _drop_retired(self) -> None:
        """Drop the retired tables; a query still reading them only delays this."""
        conn = await asyncpg.connect(self._url, timeout=10)
        try:
            await conn.execute("SET lock_timeout = '10s'")
            await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE")
        except asyncpg.PostgresError as exc:
            log.warning("retired projection left for the next rebuild", error_type=type(exc).__name__)
        finally:
            await conn.close()
