"""CloudEvents 1.0 envelope shared by every mtm event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SPEC_VERSION = "1.0"
E = TypeVar("E", bound="EventEnvelope")
SCHEMA_VERSION = 1


class Frozen(BaseModel):
    """Base of every contract value: immutable, and tolerant of fields added by newer producers."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class EventEnvelope(Frozen):
    """CloudEvents 1.0 attributes plus mtm's schema version and causal chain.

    Subclasses fix `type` with a Literal and give `data` its model.
    """

    EVENT_NAME: ClassVar[str]
    """Subject token of the event (snake_case, past tense), e.g. `medications_reconciled`."""
    SEALED: ClassVar[bool] = True
    """On the log, `data` is encrypted with the patient's key (see `mtm.platform.crypto`), so erasing the key
    erases the event; only events that must outlive the key (the erasure itself) are written in the clear."""

    id: uuid.UUID = Field(description="Event id; also the Nats-Msg-Id used for deduplication.")
    source: str = Field(min_length=1, description="URI reference of the producer, e.g. `mtm/reconciliation`.")
    type: str
    specversion: Literal["1.0"] = SPEC_VERSION
    time: AwareDatetime = Field(description="When the fact happened (producer's clock, with time zone).")
    subject: str = Field(
        pattern=r"^Patient/[A-Za-z0-9\-.]{1,64}$", description="FHIR reference of the patient: `Patient/<id>`."
    )
    datacontenttype: Literal["application/json"] = "application/json"
    schema_version: Literal[1] = SCHEMA_VERSION
    correlation_id: uuid.UUID = Field(description="Id shared by every event of one discharge's flow.")
    causation_id: uuid.UUID | None = Field(default=None, description="Id of the event or command that caused this one.")
    data: Any

    @classmethod
    def version(cls) -> int:
        """The schema version this class writes (the default of its `schema_version` literal)."""
        return int(cls.model_fields["schema_version"].default)

    @property
    def patient_id(self) -> str:
        return self.subject.removeprefix("Patient/")

    def json_around(self, data_json: str) -> str:
        """The event's JSON as `model_dump_json` writes it, from its data's JSON as the data's own `model_dump_json`
        writes it: only the envelope (`data` is declared last) is serialized, not the data a second time."""
        head = self.model_dump_json(exclude={"data"})
        return f'{head[:-1]},"data":{data_json}}}'

    @classmethod
    def create(
        cls,
        *,
        source: str,
        patient_id: str,
        data: Any,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
        time: datetime | None = None,
    ) -> Self:
        """Build an event with fresh id and time unless given (ids derived from inputs keep replays idempotent)."""
        new_id = event_id or uuid.uuid4()
        return cls(
            id=new_id,
            source=source,
            time=time or datetime.now(UTC),
            subject=f"Patient/{patient_id}",
            correlation_id=correlation_id or new_id,
            causation_id=causation_id,
            data=data,
        )

    def caused(self, cls: type[E], *, source: str, data: Any, event_id: uuid.UUID, time: datetime | None = None) -> E:
        """Build the next event of this flow: same patient and correlation, caused by this event."""
        return cls.create(
            source=source,
            patient_id=self.patient_id,
            data=data,
            correlation_id=self.correlation_id,
            causation_id=self.id,
            event_id=event_id,
            time=time,
        )
