"""What a command's use case works with: a patient's history from the log in, a decision (events + reply) out.

Pure values only, so services' application layers can use them without importing any I/O library.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtm.contracts import CommandReply, EventEnvelope


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    event: EventEnvelope


@dataclass(frozen=True)
class PatientHistory:
    """The events of one patient that a decision folds, and the last sequence of everything the patient has."""

    patient_id: str
    events: tuple[StoredEvent, ...]
    last_seq: int

    def of(self, *types: type[EventEnvelope]) -> list[EventEnvelope]:
        return [stored.event for stored in self.events if isinstance(stored.event, types)]


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
