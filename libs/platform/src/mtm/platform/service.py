"""What a service consumes and answers, declared in one table: reactions, commands, queries and its projection.

A service's `handlers.py` builds a `ServiceHandlers`; the runtime turns each declaration into a durable
consumer or a request/reply subscription. Reading that one table tells what the service does.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from mtm.contracts import CommandReply, EventEnvelope
from mtm.contracts.events import PatientErased
from mtm.contracts.identity import Actor, Role
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter
from mtm.platform.consumer import Accepted, BatchConsumer, Delivery, InvalidMessage, patient_event_consumer
from mtm.platform.decisions import Decision, PatientHistory
from mtm.platform.projection import Projection, UnitOfWork
from mtm.platform.reading import EventReader
from mtm.platform.timers import Timer

In = TypeVar("In")
C = TypeVar("C")
Q = TypeVar("Q")

Caused = Sequence[EventEnvelope]
React = Callable[[In], "Caused | Awaitable[Caused]"]


class Database:
    """The service's connection pool for the ports its use cases read through (e.g. "was this id recorded?").

    Handler tables are built before the service starts; the runtime binds the pool once it is open.
    """

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None

    def bind(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def acquire(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the service's database is not open yet")
        return self._pool.acquire()


@dataclass(frozen=True)
class Reaction(Generic[In]):
    """An input message → the events it causes, recorded (projection + outbox) in the batch's transaction.

    `react` is a use case of the service's application layer; it may raise `InvalidMessage` to park an input
    that can never be processed (the reason names what is wrong), without holding up its neighbours.
    """

    durable: str
    react: React[In]
    parse: Callable[[Delivery], In] | None = None
    """How an intake message becomes the input; patient events (`events`) are read by the runtime's reader."""
    events: tuple[type[EventEnvelope], ...] = ()
    stream: str = PATIENT_EVENTS_STREAM
    filter_subjects: tuple[str, ...] = ()
    keeps_input: bool = False
    """The input is a patient event the projection keeps too; it is applied with what it causes."""
    partitioned_by: tuple[type[EventEnvelope], ...] = ()
    after_commit: Callable[[], None] | None = None


def on_event(
    event_cls: type[In],
    react: React[In],
    *,
    durable: str,
    keeps_input: bool = False,
    after_commit: Callable[[], None] | None = None,
) -> Reaction[In]:
    """A reaction to one event of the patient log, read by the service's reader (opened, upcast to current)."""
    return on_events((event_cls,), react, durable=durable, keeps_input=keeps_input, after_commit=after_commit)


def on_events(
    event_classes: tuple[type[EventEnvelope], ...],
    react: React[Any],
    *,
    durable: str,
    keeps_input: bool = False,
    after_commit: Callable[[], None] | None = None,
) -> Reaction[Any]:
    """A reaction to several events of the patient log, each read by the service's reader."""
    return Reaction(
        durable=durable,
        react=react,
        events=event_classes,
        filter_subjects=tuple(event_filter(cls) for cls in event_classes),
        keeps_input=keeps_input,
        partitioned_by=event_classes,
        after_commit=after_commit,
    )


@dataclass(frozen=True)
class Command(Generic[C]):
    """A request/reply command decided on the patient's history from the log and appended with OCC.

    `locate` finds the patient whose log decides (from the projection); `decide` is the pure use case;
    the runtime reads the events listed in `reads`, appends what `decide` returns only if nothing reached
    the patient's log meanwhile (retrying on conflict), and replies once the projection shows the result.
    """

    subject: str
    model: type[C]
    roles: tuple[Role, ...]
    """Who may send it: the verified actor's role must be one of these."""
    locate: Callable[[asyncpg.Connection, C], Awaitable[str | None]]
    decide: Callable[[PatientHistory, C, Actor, datetime], Decision]
    reads: tuple[type[EventEnvelope], ...]
    emits: tuple[type[EventEnvelope], ...]
    not_found: str = "not found"


@dataclass(frozen=True)
class Query(Generic[Q]):
    """A request/reply query answered from the projection, for a verified actor (answers may depend on who asks)."""

    subject: str
    model: type[Q]
    roles: tuple[Role, ...]
    run: Callable[[asyncpg.Connection, Q, Actor], Awaitable[CommandReply]]


@dataclass(frozen=True)
class ServiceHandlers:
    """The one table of a service: every message it consumes or answers, and the projection it keeps."""

    projection: Projection
    reactions: tuple[Reaction[Any], ...] = ()
    commands: tuple[Command[Any], ...] = ()
    queries: tuple[Query[Any], ...] = ()
    timers: tuple[Timer, ...] = ()

    def projection_durable(self, service: str) -> str:
        return f"{service}-projection"

    def appended_directly(self) -> tuple[type[EventEnvelope], ...]:
        """Events commands append to the log (and erasures); the projection's own consumer applies them."""
        return tuple(dict.fromkeys((*(cls for command in self.commands for cls in command.emits), PatientErased)))


def reaction_consumer(reaction: Reaction[Any], projection: Projection, reader: EventReader) -> BatchConsumer[Any]:
    """The durable consumer of a reaction: decide per message, then record the batch in one transaction."""

    async def decode(delivery: Delivery) -> tuple[Any, Caused, bytes]:
        if len(reaction.events) == 1:
            value, clear = await reader.read_as(reaction.events[0], delivery.subject, delivery.data)
        elif reaction.events:
            value, clear = await reader.read(delivery.subject, delivery.data)
            if not isinstance(value, reaction.events):
                raise InvalidMessage(f"{type(value).__name__} is not among the events this reaction reads")
        else:
            assert reaction.parse is not None, "a reaction reads either a patient event or its own intake"
            value, clear = reaction.parse(delivery), delivery.data
        caused = reaction.react(value)
        if inspect.isawaitable(caused):
            caused = await caused
        return value, tuple(caused), clear

    async def prepare(deliveries: Sequence[Delivery]) -> None:
        if reaction.events:
            await reader.prepare((d.subject, d.data) for d in deliveries)

    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[tuple[Any, Caused, bytes]]]) -> int:
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        # Inputs first, then what they caused: the order the log will hold them in.
        if reaction.keeps_input:
            for item in batch:
                uow.tx.remember(item.value[0], item.value[2])
        new = await uow.fold([item.value[0] for item in batch]) if reaction.keeps_input else set()
        new |= await uow.record([event for item in batch for event in item.value[1]])
        return sum(
            1 for item in batch if any(e.id in new for e in item.value[1]) or getattr(item.value[0], "id", None) in new
        )

    return BatchConsumer(
        durable=reaction.durable,
        stream=reaction.stream,
        filter_subjects=reaction.filter_subjects,
        decode=decode,
        apply=apply,
        after_commit=reaction.after_commit,
        partitioned_by=reaction.partitioned_by,
        prepare=prepare,
    )


def projection_consumer(
    durable: str, types: Sequence[type[EventEnvelope]], projection: Projection, reader: EventReader
) -> BatchConsumer[tuple[EventEnvelope, bytes]]:
    """Applies events appended straight to the log (commands' events, erasures) to the projection, in log order."""

    async def decode(delivery: Delivery) -> tuple[EventEnvelope, bytes]:
        return await reader.read(delivery.subject, delivery.data)

    async def prepare(deliveries: Sequence[Delivery]) -> None:
        await reader.prepare((d.subject, d.data) for d in deliveries)

    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[tuple[EventEnvelope, bytes]]]) -> int:
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        for item in batch:
            uow.tx.remember(*item.value)
        return len(await uow.fold([item.value[0] for item in batch]))

    consumer = patient_event_consumer(durable, tuple(dict.fromkeys((*types, PatientErased))), apply, decode=decode)
    return dataclasses.replace(consumer, prepare=prepare)
