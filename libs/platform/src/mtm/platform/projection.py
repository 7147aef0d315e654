"""A service's projection of the patient log: tables that are a pure function of the events applied to them.

Every event a projection applies is claimed in its `applied_events` table in the same transaction, so applying
the same event twice (a redelivery, a re-send after the deduplication window, a caused event seen again on the
log) changes nothing. Live, events reach a projection in two ways that give the same tables as a rebuild:

* events a service decides while reacting to another event are applied in the transaction that enqueues them
  in the outbox (`UnitOfWork.record`), before they reach the log, so the service never reads back its own
  events;
* events appended straight to the log (commands decided with optimistic concurrency) are applied by the
  projection's own consumer, in log order.

A rebuild applies every event the projection handles, in log order, into a fresh schema.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg

from mtm.contracts import EventEnvelope
from mtm.contracts.events import PatientErased
from mtm.platform.outbox import OutgoingMessage, enqueue

LIVE_SCHEMA = "projection"
REBUILD_SCHEMA = "projection_rebuild"
SEARCH_PATH = f"{LIVE_SCHEMA}, public"
# Writers of a projection hold this advisory lock shared for their transaction; the swap at the end of a
# rebuild takes it exclusively, so no write can land in the tables being retired.
WRITER_LOCK_KEY = 7_320_003
LOCK_AS_WRITER = "SELECT pg_advisory_xact_lock_shared($1)"
LOCK_AS_SWAPPER = "SELECT pg_advisory_xact_lock($1)"
# How many claims a projection keeps: the newest, about 40 MB of table and index at the default. A duplicate
# reaches a projection within moments of its original (a redelivery, a relay's re-send within the deduplication
# window), thousands of events later at most; the bound keeps the table from growing with the log.
CLAIMS_KEPT = 1_000_000
# One round trip: the claim, and the oldest claims beyond the bound let go (the DELETE sees the table as it was
# before this INSERT, so the bound holds to within one batch).
CLAIM_EVENTS = """
WITH claimed AS (
    INSERT INTO applied_events (event_id) SELECT unnest($1::uuid[])
    ON CONFLICT DO NOTHING
    RETURNING event_id
), let_go AS (
    DELETE FROM applied_events WHERE position <= (SELECT max(position) FROM applied_events) - $2::bigint
)
SELECT event_id FROM claimed
"""
IS_APPLIED = "SELECT EXISTS (SELECT 1 FROM applied_events WHERE event_id = $1)"
# Patients whose state a rebuild keeps in memory between batches; the log's patients past this are read back.
KEPT_PATIENTS = 200_000


class Kept:
    """What a projection keeps in memory about each patient while its process is the only writer of its tables
    (a rebuild), instead of reading back rows it wrote itself; the least recent patients are let go past a bound.

    A state put as unwritten is not in the tables yet: the projection writes it (its `write_kept`) when it is let
    go, and the rebuild writes the rest before the swap, so each patient's row is written once per replay instead
    of once per batch that touched it.
    """

    __slots__ = ("_capacity", "_let_go", "_state", "_unwritten")

    def __init__(self, capacity: int | None = None) -> None:
        self._capacity = KEPT_PATIENTS if capacity is None else capacity
        self._state: OrderedDict[str, object] = OrderedDict()
        self._unwritten: set[str] = set()
        self._let_go: list[object] = []

    def get(self, patient_id: str) -> object | None:
        return self._state.get(patient_id)

    def put(self, patient_id: str, state: object, *, unwritten: bool = False) -> None:
        self._state[patient_id] = state
        self._state.move_to_end(patient_id)
        if unwritten:
            self._unwritten.add(patient_id)
        while len(self._state) > self._capacity:
            gone, gone_state = self._state.popitem(last=False)
            if gone in self._unwritten:
                self._unwritten.discard(gone)
                self._let_go.append(gone_state)

    def forget(self, patient_id: str) -> None:
        self._state.pop(patient_id, None)
        self._unwritten.discard(patient_id)

    def take_let_go(self) -> list[object]:
        """Unwritten states let go since the last call: the tables must have them before a patient is read back."""
        let_go, self._let_go = self._let_go, []
        return let_go

    def take_unwritten(self) -> list[object]:
        """Every state not in the tables yet (patients in order), now counted as written."""
        unwritten = self.take_let_go() + [self._state[p] for p in sorted(self._unwritten)]
        self._unwritten.clear()
        return unwritten


class Tx:
    """A projection's view of one transaction: the connection, and each event's JSON serialized at most once.

    Tables that keep an event's JSON and the outbox that publishes it share the same serialization. `kept` is
    given only where nothing else writes the tables (a rebuild): live, other writers change rows between batches.
    """

    __slots__ = ("_bodies", "_data_json", "conn", "kept")

    def __init__(self, conn: asyncpg.Connection, kept: Kept | None = None) -> None:
        self.conn = conn
        self.kept = kept
        self._bodies: dict[uuid.UUID, str] = {}
        self._data_json: dict[uuid.UUID, str] = {}

    def body(self, event: EventEnvelope) -> str:
        found = self._bodies.get(event.id)
        if found is None:
            data_json = self._data_json.pop(event.id, None)
            body = event.model_dump_json() if data_json is None else event.json_around(data_json)
            found = self._bodies[event.id] = body
        return found

    def data_serialized(self, event: EventEnvelope, data_json: str) -> None:
        """The event's data as its `model_dump_json` writes it, serialized by the projection for its own use (a
        digest): the event's JSON, if asked for, is built around it instead of serializing the data again."""
        if event.id not in self._bodies:
            self._data_json[event.id] = data_json

    def remember(self, event: EventEnvelope, body: bytes) -> None:
        """The JSON an event was read from (the log's own bytes), so it is not serialized again.

        Only for events in their current version: an upcast event's stored JSON is not what it is now.
        """
        if event.schema_version == event.version() and body[-1:] == b"}":
            self._bodies[event.id] = body.decode()


Apply = Callable[[Tx, Sequence[EventEnvelope]], Awaitable[None]]
WriteKept = Callable[[Tx, Sequence[object]], Awaitable[None]]


def platform_projection_migrations() -> Traversable:
    """Tables every projection has (`applied_events`), created in the projection's schema."""
    return files("mtm.platform") / "migrations" / "projection"


@dataclass(frozen=True)
class Projection:
    """What a service keeps of the log: its tables, the SQL that creates them, and how events change them.

    `apply` receives events in log order (live in the order they were decided) and must use only the events:
    no wall clock, no stream sequence, no other table, so that a rebuild gives the same rows.
    """

    migrations: Traversable
    tables: tuple[str, ...]
    handles: tuple[type[EventEnvelope], ...]
    apply: Apply
    records: tuple[type[EventEnvelope], ...] = field(default=())
    """Events the service publishes that the tables ignore; their ids are still claimed, so a re-sent cause
    can never publish them twice, also after a rebuild."""
    erase: tuple[str, ...] = field(default=())
    """SQL that deletes everything the tables hold about one patient (`$1` = patient id), run on
    `PatientErased`. Every table that holds patient data must be covered (the erasure test checks it)."""
    write_kept: WriteKept | None = None
    """Writes states `apply` put in `Tx.kept` as unwritten (a rebuild); required if `apply` defers any."""

    @property
    def replayed(self) -> tuple[type[EventEnvelope], ...]:
        """Every event a rebuild reads from the log."""
        return tuple(dict.fromkeys((*self.handles, *self.records, PatientErased)))

    def applies(self, event: EventEnvelope) -> bool:
        return isinstance(event, self.handles)


def runs(events: Sequence[EventEnvelope]) -> list[list[EventEnvelope]]:
    """Consecutive events of the same type, in order: each run can be written with one batched statement."""
    grouped: list[list[EventEnvelope]] = []
    for event in events:
        if grouped and type(grouped[-1][0]) is type(event):
            grouped[-1].append(event)
        else:
            grouped.append([event])
    return grouped


async def lock_as_writer(conn: asyncpg.Connection) -> None:
    await conn.execute(LOCK_AS_WRITER, WRITER_LOCK_KEY)


async def claim(conn: asyncpg.Connection, events: Sequence[EventEnvelope]) -> list[EventEnvelope]:
    """The events not applied before, in their order; the others are already in the tables."""
    if not events:
        return []
    fresh = {row["event_id"] for row in await conn.fetch(CLAIM_EVENTS, [e.id for e in events], CLAIMS_KEPT)}
    seen: set[uuid.UUID] = set()
    out = []
    for event in events:
        if event.id in fresh and event.id not in seen:
            seen.add(event.id)
            out.append(event)
    return out


async def apply_events(tx: Tx, projection: Projection, events: Sequence[EventEnvelope]) -> int:
    """Claim and apply events the projection has not seen; returns how many were new."""
    fresh = await claim(tx.conn, events)
    await apply_claimed(tx, projection, fresh)
    return len(fresh)


async def apply_claimed(tx: Tx, projection: Projection, events: Sequence[EventEnvelope]) -> None:
    """Apply events in order; a `PatientErased` among them deletes what the tables hold about its patient."""
    pending: list[EventEnvelope] = []
    for event in events:
        if isinstance(event, PatientErased):
            if pending:
                await projection.apply(tx, pending)
                pending = []
            if tx.kept is not None:
                tx.kept.forget(event.data.patient_id)
            for statement in projection.erase:
                await tx.conn.execute(statement, event.data.patient_id)
        elif projection.applies(event):
            pending.append(event)
    if pending:
        await projection.apply(tx, pending)


async def is_applied(conn: asyncpg.Connection, event_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval(IS_APPLIED, event_id))


class UnitOfWork:
    """One transaction of a service: the events it decided are applied to its projection and put in the outbox.

    Events caused by an input are recorded once, whatever the number of deliveries of that input: their ids
    are derived from the cause, so a second recording finds them claimed and enqueues nothing.
    """

    def __init__(self, conn: asyncpg.Connection, projection: Projection) -> None:
        self.tx = Tx(conn)
        self._projection = projection
        self.recorded = 0

    async def begin(self) -> None:
        await lock_as_writer(self.tx.conn)

    async def fold(self, events: Sequence[EventEnvelope]) -> set[uuid.UUID]:
        """Apply events that happened elsewhere (an input the projection keeps) without publishing them.

        Returns the ids that were new to the projection."""
        fresh = await claim(self.tx.conn, events)
        await apply_claimed(self.tx, self._projection, fresh)
        return {e.id for e in fresh}

    async def record(
        self, events: Sequence[EventEnvelope], headers: Mapping[uuid.UUID, Mapping[str, str]] | None = None
    ) -> set[uuid.UUID]:
        """Apply the service's own new events and enqueue them for the log, skipping any recorded before.

        `headers`: what each event is to be published with besides its id (the trace context of its cause).
        Returns the ids that were new (recorded now)."""
        fresh = await claim(self.tx.conn, events)
        if not fresh:
            return set()
        await apply_claimed(self.tx, self._projection, fresh)
        found = headers or {}
        await enqueue(self.tx.conn, [OutgoingMessage.of_event(e, self.tx.body(e), found.get(e.id)) for e in fresh])
        self.recorded += len(fresh)
        return {e.id for e in fresh}
