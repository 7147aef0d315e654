"""Reading stored patient events: open sealed data with the patient's key, then upcast to the current model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from mtm.contracts import EventEnvelope, EventRegistry
from mtm.contracts.events import PatientErased
from mtm.contracts.subjects import event_name_of_subject, patient_of_subject
from mtm.platform.bodies import BodyReference, EventBodies
from mtm.platform.crypto import ErasedPatient, KeyRing, Unreadable, sealed_key_id

E = TypeVar("E", bound=EventEnvelope)


class EventReader:
    """Every path that reads the patient log (consumers, command histories, rebuilds) reads through one of these.

    An event of an erased patient raises `ErasedPatient` (its reader skips it), except `PatientErased` itself,
    which is written in the clear and teaches this service's key ring that the patient is gone. An event kept in
    the object store (`mtm.platform.bodies`: the log holds a reference) is fetched from `bodies` and read as if
    the log held it; one the store does not give back whole raises `StoredBodyMissing`, which every reader treats
    as an outage (the event is held, never parked or skipped).
    """

    def __init__(self, registry: EventRegistry, keyring: KeyRing, bodies: EventBodies | None = None) -> None:
        self.registry = registry
        self.keyring = keyring
        # Where events too large for one message are kept; a service's runtime binds it once connected.
        self.bodies = bodies

    async def prepare(self, stored: Iterable[tuple[str, bytes]]) -> None:
        """Fetch, in one request, the keys of the patients whose sealed events these are (subject, body).

        An event kept in the object store is seen sealed only once fetched; its key is asked for then (they are
        few: only events too large for one message are kept there).
        """
        await self.keyring.prepare(
            patient_of_subject(subject) for subject, body in stored if sealed_key_id(body) is not None
        )

    async def read(self, subject: str, body: bytes) -> tuple[EventEnvelope, bytes]:
        """The event and its clear JSON (which tables that keep the event's JSON store as it is)."""
        if event_name_of_subject(subject) == PatientErased.EVENT_NAME:
            event = self.registry.parse_stored(subject, body)
            self.keyring.forget(event.patient_id)
            return event, body
        clear = await self._open(subject, body)
        return self.registry.parse_stored(subject, clear), clear

    async def read_as(self, cls: type[E], subject: str, body: bytes) -> tuple[E, bytes]:
        clear = await self._open(subject, body)
        return self.registry.parse(clear, cls), clear

    async def _open(self, subject: str, body: bytes) -> bytes:
        patient_id = patient_of_subject(subject)
        reference = BodyReference.of(body)
        if reference is not None:
            if self.keyring.erased(patient_id):
                raise ErasedPatient(patient_id)
            if self.bodies is None:
                raise Unreadable("stored body: this reader has no access to the object store")
            body = await self.bodies.fetch(reference)
        return await self.keyring.open(patient_id, body)


__all__ = ["ErasedPatient", "EventReader"]
