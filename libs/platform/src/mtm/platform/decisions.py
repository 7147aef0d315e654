"""What a command's use case works with: a patient's history from the log in, a decision (events + reply) out.

Pure values only, so services' application layers can use them without importing any I/O library.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from mtm.contracts import CommandReply, EventEnvelope
from mtm.contracts.commands import Command

E = TypeVar("E", bound=EventEnvelope)


class OfPatientFlow(Protocol):
    """What a command acts on, as its history tells it: whose record, and which flow it belongs to."""

    @property
    def patient_id(self) -> str: ...

    @property
    def correlation_id(self) -> uuid.UUID: ...


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: EventEnvelope
    trace: Mapping[str, str] | None = None
    """The trace context the event was written with (W3C headers), if any."""


@dataclass(frozen=True)
class PatientHistory:
    """The events of one patient that a decision folds, and the last sequence of everything the patient has."""

    patient_id: str
    events: tuple[StoredEvent, ...]
    last_seq: int

    def of(self, *types: type[EventEnvelope]) -> list[EventEnvelope]:
        return [stored.event for stored in self.events if isinstance(stored.event, types)]


def decided(
    cls: type[E], command: Command, about: OfPatientFlow, *, source: str, data: Any, event_id: uuid.UUID, at: datetime
) -> E:
    """The event a command causes: on the patient's record, in the flow it belongs to, caused by the command."""
    return cls.create(
        source=source,
        patient_id=about.patient_id,
        data=data,
        correlation_id=about.correlation_id,
        causation_id=command.command_id,
        event_id=event_id,
        time=at,
    )


@dataclass(frozen=True)
class Decision:
    """The reply to a command and the events it causes; no events means nothing changes."""

    reply: CommandReply
    events: tuple[EventEnvelope, ...] = ()

    @classmethod
    def refuse(
        cls, outcome: str, message: str, *, resource_id: str | None = None, status: str | None = None
    ) -> Decision:
        return cls(CommandReply(outcome=outcome, message=message, resource_id=resource_id, status=status))  # type: ignore[arg-type]
