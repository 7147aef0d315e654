"""What a service consumes and answers, declared in one table: reactions, commands, queries and its projection.

A service's `handlers.py` builds a `ServiceHandlers`; the runtime turns each declaration into a durable
consumer or a request/reply subscription. Reading that one table tells what the service does.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from mtm.contracts import CommandReply, EventEnvelope
from mtm.contracts.events import PatientErased
from mtm.contracts.identity import Actor, Role
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter
from mtm.platform import tracing
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
    emits: tuple[type[EventEnvelope], ...] = ()
    """The events `react` may cause (what the service's AsyncAPI document says it publishes)."""
    accepts: tuple[Any, ...] = ()
    """What an intake message may be, where `parse` reads one (for the AsyncAPI document): contract models, or
    JSON Schemas (dicts) of formats that are not mtm's own (a FHIR R4 Bundle)."""
    prefetch: Callable[[Sequence[Any]], Awaitable[None]] | None = None
    """Runs once per batch on the inputs that could be read, before `react` sees any of them: one query for what
    `react` would otherwise look up message by message (each a round trip and a pooled connection)."""
    retiring: bool = False
    """A consumer an earlier version kept and this one no longer needs, declared only to finish its backlog on
    upgrade: the runtime never creates its durable, runs it while the durable exists and deletes it once drained."""
    linger_s: float = 0.0
    """For a reaction nobody waits on: after a batch that left its durable empty, wait this long for company, so
    a trickle is taken a few dozen messages at a time instead of a transaction each (see `BatchConsumer`)."""


def on_event(
    event_cls: type[In],
    react: React[In],
    *,
    durable: str,
    emits: tuple[type[EventEnvelope], ...] = (),
    keeps_input: bool = False,
    after_commit: Callable[[], None] | None = None,
    prefetch: Callable[[Sequence[Any]], Awaitable[None]] | None = None,
    retiring: bool = False,
) -> Reaction[In]:
    """A reaction to one event of the patient log, read by the service's reader (opened, upcast to current)."""
    return on_events(
        (event_cls,),
        react,
        durable=durable,
        emits=emits,
        keeps_input=keeps_input,
        after_commit=after_commit,
        prefetch=prefetch,
        retiring=retiring,
    )


def on_events(
    event_classes: tuple[type[EventEnvelope], ...],
    react: React[Any],
    *,
    durable: str,
    emits: tuple[type[EventEnvelope], ...] = (),
    keeps_input: bool = False,
    after_commit: Callable[[], None] | None = None,
    prefetch: Callable[[Sequence[Any]], Awaitable[None]] | None = None,
    retiring: bool = False,
    linger_s: float = 0.0,
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
        emits=emits,
        prefetch=prefetch,
        retiring=retiring,
        linger_s=linger_s,
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
class Publication:
    """A message a service publishes outside the patient log (e.g. notify's physician inbox), for its AsyncAPI
    document: the address (with `{parameters}`), its stream, and the payload's model or JSON Schema."""

    address: str
    payload: Any
    stream: str | None = None
    description: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    """(name, description) of each `{parameter}` in the address."""


@dataclass(frozen=True)
class ServiceHandlers:
    """The one table of a service: every message it consumes or answers, and the projection it keeps."""

    projection: Projection
    reactions: tuple[Reaction[Any], ...] = ()
    commands: tuple[Command[Any], ...] = ()
    queries: tuple[Query[Any], ...] = ()
    timers: tuple[Timer, ...] = ()

    def emitted(self) -> tuple[type[EventEnvelope], ...]:
        """Every event the service publishes: what its reactions, commands and timers declare they cause."""
        return tuple(
            dict.fromkeys(
                (
                    *(cls for reaction in self.reactions for cls in reaction.emits),
                    *(cls for command in self.commands for cls in command.emits),
                    *(cls for timer in self.timers for cls in timer.emits),
                )
            )
        )

    def projection_durable(self, service: str) -> str:
        return f"{service}-projection"

    def appended_directly(self) -> tuple[type[EventEnvelope], ...]:
        """Events commands append to the log (and erasures); the projection's own consumer applies them."""
        return tuple(dict.fromkeys((*(cls for command in self.commands for cls in command.emits), PatientErased)))


@dataclass(frozen=True, slots=True)
class Reacted:
    """One input read and reacted to: the input, what it caused, its JSON as read, its consume span (if traced)."""

    input: Any
    caused: Caused
    clear: bytes
    trace: Any = None


def _consume_span(durable: str, delivery: Delivery, value: Any, started: int) -> Any:
    """The consume step of the input's flow (its correlation id), from when its reading began; None when off."""
    first = value[0] if isinstance(value, tuple) and value else value
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": durable,
        "messaging.destination.template": tracing.subject_template(delivery.subject),
        "mtm.stream_seq": delivery.stream_seq,
    }
    flow = None
    if isinstance(first, EventEnvelope):
        flow = first.correlation_id
        attributes.update(
            {
                "messaging.message.id": str(first.id),
                "mtm.event_type": type(first).EVENT_NAME,
                "mtm.correlation_id": str(flow),
            }
        )
    return tracing.start(
        f"consume {durable}",
        kind=tracing.CONSUMER,
        flow=flow,
        headers=delivery.headers,
        attributes=attributes,
        start_time=started,
    )


def _applied_spans(durable: str, batch: Sequence[Accepted[Any]], started: int) -> None:
    """The batch's apply step, once in each message's flow (a batch mixes flows), over the same interval."""
    tracing.record(
        f"apply {durable}",
        [item.value.trace for item in batch],
        started,
        time.time_ns(),
        {"messaging.consumer.group.name": durable, "messaging.batch.message_count": len(batch)},
    )


def reaction_consumer(reaction: Reaction[Any], projection: Projection, reader: EventReader) -> BatchConsumer[Any]:
    """The durable consumer of a reaction: decide per message, then record the batch in one transaction."""

    # Inputs `prepare` read for the reaction's prefetch, taken by `decode` so that no message is read twice (keyed by
    # stream sequence: the pull loops of several groups share this consumer).
    read_ahead: dict[tuple[str, int], tuple[Any, bytes]] = {}

    async def read(delivery: Delivery) -> tuple[Any, bytes]:
        if len(reaction.events) == 1:
            return await reader.read_as(reaction.events[0], delivery.subject, delivery.data)
        if reaction.events:
            value, clear = await reader.read(delivery.subject, delivery.data)
            if not isinstance(value, reaction.events):
                raise InvalidMessage(f"{type(value).__name__} is not among the events this reaction reads")
            return value, clear
        assert reaction.parse is not None, "a reaction reads either a patient event or its own intake"
        return reaction.parse(delivery), delivery.data

    async def decode(delivery: Delivery) -> Reacted:
        started = time.time_ns() if tracing.enabled() else 0
        value, clear = read_ahead.pop((delivery.stream, delivery.stream_seq), None) or await read(delivery)
        span = _consume_span(reaction.durable, delivery, value, started) if started else None
        with tracing.active(span):
            caused = reaction.react(value)
            if inspect.isawaitable(caused):
                caused = await caused
        return Reacted(value, tuple(caused), clear, tracing.context_of(span))

    async def prepare(deliveries: Sequence[Delivery]) -> None:
        if reaction.events:
            await reader.prepare((d.subject, d.data) for d in deliveries)
        if reaction.prefetch is None:
            return
        inputs = []
        for delivery in deliveries:
            try:
                value, clear = await read(delivery)
            except Exception:
                continue  # `decode` reads it again and says why it cannot be read
            read_ahead[(delivery.stream, delivery.stream_seq)] = (value, clear)
            inputs.append(value)
        await reaction.prefetch(inputs)

    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[Reacted]]) -> int:
        started = time.time_ns() if tracing.enabled() else 0
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        # Inputs first, then what they caused: the order the log will hold them in.
        if reaction.keeps_input:
            for item in batch:
                uow.tx.remember(item.value.input, item.value.clear)
        new = await uow.fold([item.value.input for item in batch]) if reaction.keeps_input else set()
        # Each caused event is published as a child of the step that decided it.
        headers = (
            {e.id: tracing.headers_for(item.value.trace) for item in batch for e in item.value.caused}
            if started
            else None
        )
        new |= await uow.record([event for item in batch for event in item.value.caused], headers)
        if started:
            _applied_spans(reaction.durable, batch, started)
        return sum(
            1
            for item in batch
            if any(e.id in new for e in item.value.caused) or getattr(item.value.input, "id", None) in new
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
        retiring=reaction.retiring,
        linger_s=reaction.linger_s,
    )


def projection_consumer(
    durable: str, types: Sequence[type[EventEnvelope]], projection: Projection, reader: EventReader
) -> BatchConsumer[Reacted]:
    """Applies events appended straight to the log (commands' events, erasures) to the projection, in log order."""

    async def decode(delivery: Delivery) -> Reacted:
        started = time.time_ns() if tracing.enabled() else 0
        event, clear = await reader.read(delivery.subject, delivery.data)
        span = _consume_span(durable, delivery, event, started) if started else None
        if span is not None:
            span.end()
        return Reacted(event, (), clear, tracing.context_of(span))

    async def prepare(deliveries: Sequence[Delivery]) -> None:
        await reader.prepare((d.subject, d.data) for d in deliveries)

    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[Reacted]]) -> int:
        started = time.time_ns() if tracing.enabled() else 0
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        for item in batch:
            uow.tx.remember(item.value.input, item.value.clear)
        applied = len(await uow.fold([item.value.input for item in batch]))
        if started:
            _applied_spans(durable, batch, started)
        return applied

    consumer = patient_event_consumer(durable, tuple(dict.fromkeys((*types, PatientErased))), apply, decode=decode)
    return dataclasses.replace(consumer, prepare=prepare)
