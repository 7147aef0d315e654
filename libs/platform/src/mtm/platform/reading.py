"""Reading stored patient events: open sealed data with the patient's key, then upcast to the current model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from mtm.contracts import EventEnvelope, EventRegistry
from mtm.contracts.events import PatientErased
from mtm.contracts.subjects import event_name_of_subject, patient_of_subject
from mtm.platform.crypto import ErasedPatient, KeyRing, sealed_key_id

E = TypeVar("E", bound=EventEnvelope)


class EventReader:
    """Every path that reads the patient log (consumers, command histories, rebuilds) reads through one of these.

    An event of an erased patient raises `ErasedPatient` (its reader skips it), except `PatientErased` itself,
    which is written in the clear and teaches this service's key ring that the patient is gone.
    """

    def __init__(self, registry: EventRegistry, keyring: KeyRing) -> None:
        self.registry = registry
        self.keyring = keyring

    async def prepare(self, stored: Iterable[tuple[str, bytes]]) -> None:
        """Fetch, in one request, the keys of the patients whose sealed events these are (subject, body)."""
        await self.keyring.prepare(
            patient_of_subject(subject) for subject, body in stored if sealed_key_id(body) is not None
        )

    async def read(self, subject: str, body: bytes) -> tuple[EventEnvelope, bytes]:
        """The event and its clear JSON (which tables that keep the event's JSON store as it is)."""
        if event_name_of_subject(subject) == PatientErased.EVENT_NAME:
            event = self.registry.parse_stored(subject, body)
            self.keyring.forget(event.patient_id)
            return event, body
        clear = await self.keyring.open(patient_of_subject(subject), body)
        return self.registry.parse_stored(subject, clear), clear

    async def read_as(self, cls: type[E], subject: str, body: bytes) -> tuple[E, bytes]:
        clear = await self.keyring.open(patient_of_subject(subject), body)
        return self.registry.parse(clear, cls), clear


__all__ = ["ErasedPatient", "EventReader"]
