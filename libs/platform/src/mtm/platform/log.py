"""The patient log as an aggregate store: read one patient's history, append with optimistic concurrency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError

from mtm.contracts import EventEnvelope
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_name_of_subject, event_subject, patient_filter
from mtm.platform.bodies import MAX_STORED_BODY_BYTES
from mtm.platform.crypto import ErasedPatient
from mtm.platform.decisions import PatientHistory, StoredEvent
from mtm.platform.direct import DirectMessage, direct_batch
from mtm.platform.outbox import MSG_ID_HEADER
from mtm.platform.reading import EventReader
from mtm.platform.tracing import TRACEPARENT, TRACESTATE

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
WRONG_LAST_SEQUENCE = 10071
# Messages per direct-get batch; a patient's history is read in as many batches as it takes.
HISTORY_BATCH = 1000


class ConcurrencyConflict(Exception):
    """Something was appended to the patient's log after the history the decision was based on."""


class TooLargeForTheLog(ValueError):
    """A decided event is larger than even the object store keeps (`MAX_STORED_BODY_BYTES`); nothing was appended."""


# Room for the headers of an append (message id, expectations, trace context) and NATS's own framing.
HEADER_ROOM = 4 * 1024


class PatientLog:
    """Reads and appends one patient's events on the `PATIENT_EVENTS` stream.

    A history is read with batched direct gets on the patient's subject filter (one round trip for up to
    `HISTORY_BATCH` events). Appends carry `Nats-Expected-Last-Subject-Sequence` for the same filter, so a
    decision made on a history is stored only if nothing was appended to that patient since it was read.
    """

    def __init__(self, nc: Client, js: JetStreamContext, reader: EventReader, *, seal: bool = True) -> None:
        self._nc = nc
        self._js = js
        self._reader = reader
        self._seal = seal

    async def read(self, patient_id: str, types: Sequence[type[EventEnvelope]]) -> PatientHistory:
        wanted = {cls.EVENT_NAME for cls in types}
        events: list[StoredEvent] = []
        last_seq = 0
        start = 1
        while True:
            batch, done = await self._direct_batch(patient_filter(patient_id), start)
            for seq, subject, data, headers in batch:
                last_seq = seq
                if event_name_of_subject(subject) in wanted:
                    event, _ = await self._reader.read(subject, data)
                    events.append(StoredEvent(seq, event, _trace_headers(headers)))
            if done or not batch:
                return PatientHistory(patient_id, tuple(events), last_seq)
            start = last_seq + 1

    async def holds(self, subject: str, msg_id: str) -> bool:
        """Whether the log already stores a message with this Nats-Msg-Id on this exact subject."""
        start = 1
        while True:
            batch, done = await self._direct_batch(subject, start)
            if any(headers.get(MSG_ID_HEADER) == msg_id for _, _, _, headers in batch):
                return True
            if done or not batch:
                return False
            start = batch[-1][0] + 1

    async def _direct_batch(self, subject_filter: str, start: int) -> tuple[list[DirectMessage], bool]:
        """Messages from `start` on the filter, and whether none are left after them."""
        return await direct_batch(self._nc, PATIENT_EVENTS_STREAM, subject_filter, start, HISTORY_BATCH)

    async def append(
        self, events: Sequence[EventEnvelope], *, expected_last_seq: int, headers: Mapping[str, str] | None = None
    ) -> int:
        """Append the events in order, the first only if the patient's log still ends at `expected_last_seq`.

        The first event's check is the decision's: once it is stored, the rest follow it whatever else reaches the
        patient's log in between. Another service's event landing there (the program's adherence measure between a
        completion and its follow-up) used to fail the chain: the command then decided again on a history holding
        its own first event, refused ("already completed"), and left the follow-up unrecorded. Each event keeps its
        id, so a retried append stores nothing twice. Returns the last sequence.
        `headers` go with every event besides its own (the trace context of the decision).
        """
        bodies = []
        # Every event is sealed and measured before the first is sent: a decision lands whole or not at all.
        for event in events:
            clear = event.model_dump_json()
            body = await self._reader.keyring.close(event, clear) if self._seal else clear.encode()
            if body is None:
                raise ErasedPatient(event.patient_id)
            if len(body) > MAX_STORED_BODY_BYTES:
                raise TooLargeForTheLog(
                    f"{event.EVENT_NAME} is {len(body):,} bytes as the log stores it, over the "
                    f"{MAX_STORED_BODY_BYTES:,} one event may take: shorten the text or lists"
                )
            bodies.append(body)
        # Bodies too large for one message go to the object store before anything is appended, so the log never
        # references a body that is not there (a conflict below leaves objects no entry names, nothing worse).
        limit = self._nc.max_payload - HEADER_ROOM
        for i, (event, body) in enumerate(zip(events, bodies, strict=True)):
            if len(body) > limit:
                if self._reader.bodies is None:
                    raise RuntimeError("the patient log was given no object store for events too large for a message")
                bodies[i] = await self._reader.bodies.store(str(event.id), body)
        last_seq = expected_last_seq
        for position, (event, body) in enumerate(zip(events, bodies, strict=True)):
            sent = {**(headers or {}), MSG_ID_HEADER: str(event.id)}
            if position == 0:
                sent[EXPECTED_LAST_SUBJECT_SEQUENCE] = str(expected_last_seq)
                sent[EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT] = patient_filter(event.patient_id)
            try:
                ack = await self._js.publish(event_subject(event), body, headers=sent)
            except BadRequestError as exc:
                if exc.err_code == WRONG_LAST_SEQUENCE:
                    raise ConcurrencyConflict(str(exc.description)) from exc
                raise
            last_seq = ack.seq
        return last_seq


def _trace_headers(headers: Mapping[str, str]) -> Mapping[str, str] | None:
    """The trace context an event was written with, if any (a command continues its flow's trace from it)."""
    found = {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if k in headers}
    return found or None
