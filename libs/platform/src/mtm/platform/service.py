"""What a service consumes and answers, declared in one table: reactions, commands, queries and its projection.

A service's `handlers.py` builds a `ServiceHandlers`; the runtime turns each declaration into a durable
consumer or a request/reply subscription. Reading that one table tells what the service does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg

from mtm.contracts import CommandReply, EventEnvelope, EventRegistry
from mtm.contracts.identity import Actor, Role
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter
from mtm.platform.consumer import Accepted, BatchConsumer, Delivery, patient_event_consumer
from mtm.platform.decisions import Decision, PatientHistory
from mtm.platform.projection import Projection, UnitOfWork
from mtm.platform.timers import Timer

In = TypeVar("In")
C = TypeVar("C")
Q = TypeVar("Q")

Caused = Sequence[EventEnvelope]
React = Callable[[In], "Caused | Awaitable[Caused]"]


@dataclass(frozen=True)
class Reaction(Generic[In]):
    """An input message → the events it causes, recorded (projection + outbox) in the batch's transaction.

    `react` is a use case of the service's application layer; it may raise `InvalidMessage` to park an input
    that can never be processed (the reason names what is wrong), without holding up its neighbours.
    """

    durable: str
    react: React[In]
    parse: Callable[[Delivery], In]
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
    registry: EventRegistry,
    keeps_input: bool = False,
    after_commit: Callable[[], None] | None = None,
) -> Reaction[In]:
    """A reaction to one event of the patient log, read through the registry (older versions are upcast)."""

    def parse(delivery: Delivery) -> In:
        return registry.parse(delivery.data, event_cls)  # type: ignore[arg-type,return-value]

    return Reaction(
        durable=durable,
        react=react,
        parse=parse,
        filter_subjects=(event_filter(event_cls),),  # type: ignore[arg-type]
        keeps_input=keeps_input,
        partitioned_by=(event_cls,),  # type: ignore[arg-type]
        after_commit=after_commit,
    )


def on_events(
    event_classes: Sequence[type[EventEnvelope]],
    react: React[EventEnvelope],
    *,
    durable: str,
    registry: EventRegistry,
    keeps_input: bool = False,
) -> Reaction[EventEnvelope]:
    """A reaction to several events of the patient log on one durable, so each patient's come in log order."""

    def parse(delivery: Delivery) -> EventEnvelope:
        return registry.parse_stored(delivery.subject, delivery.data)

    return Reaction(
        durable=durable,
        react=react,
        parse=parse,
        filter_subjects=tuple(event_filter(cls) for cls in event_classes),
        keeps_input=keeps_input,
        partitioned_by=tuple(event_classes),
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
        """Events commands append to the log; the projection's own consumer applies them."""
        return tuple(dict.fromkeys(cls for command in self.commands for cls in command.emits))


def reaction_consumer(reaction: Reaction[Any], projection: Projection) -> BatchConsumer[Any]:
    """The durable consumer of a reaction: decide per message, then record the batch in one transaction."""

    async def decode(delivery: Delivery) -> tuple[Any, Caused]:
        value = reaction.parse(delivery)
        caused = reaction.react(value)
        if inspect.isawaitable(caused):
            caused = await caused
        return value, tuple(caused)

    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[tuple[Any, Caused]]]) -> int:
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        # Inputs first, then what they caused: the order the log will hold them in.
        if reaction.keeps_input:
            for item in batch:
                uow.tx.remember(item.value[0], item.delivery.data)
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
    )


def projection_consumer(
    durable: str, types: Sequence[type[EventEnvelope]], projection: Projection, registry: EventRegistry
) -> BatchConsumer[EventEnvelope]:
    """Applies events appended straight to the log (by commands) to the projection, in log order."""

    def decode(delivery: Delivery) -> EventEnvelope:
        return registry.parse_stored(delivery.subject, delivery.data)

    async def apply(conn: asyncpg.Connection, batch: Sequence[Accepted[EventEnvelope]]) -> int:
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        for item in batch:
            uow.tx.remember(item.value, item.delivery.data)
        return len(await uow.fold([item.value for item in batch]))

    return patient_event_consumer(durable, types, apply, decode=decode)
