"""Batch consumers: fetch a batch, apply it in one transaction, park what cannot be processed."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Generic, TypeVar

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from mtm.contracts import DeadLetter, EventEnvelope
from mtm.contracts.dead_letter import dead_letter_bucket
from mtm.contracts.subjects import (
    PATIENT_EVENTS_STREAM,
    PATIENT_PARTITIONS,
    dead_letter_subject,
    event_filter,
    partition_filters,
)
from mtm.platform.crypto import ErasedPatient
from mtm.platform.faults import backoff, is_transient
from mtm.platform.logging import get_logger
from mtm.platform.outbox import MSG_ID_HEADER

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound=EventEnvelope)

# Redelivery back-off for naks (JetStream's consumer `backoff` only applies to ack timeouts).
NAK_DELAYS_S = (0.5, 2.0, 5.0, 15.0, 30.0)
MAX_REASON_CHARS = 2000
MAX_HEADER_CHARS = 512
# Bodies larger than this are parked unread; a contract's own limits keep valid messages far below it.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024
# Room for the dead letter's headers and envelope beside a body that must fit in one NATS message.
LETTER_HEADROOM = 16 * 1024
PARK_CONFIRM_TIMEOUT_S = 10.0
# Deliveries beyond `max_deliver` that a message may still get without an outcome (a process that died with it in
# hand, ack timeouts) before it is parked as what keeps stopping its reader.
CRASH_ALLOWANCE = 10


class InvalidMessage(ValueError):
    """A message that can never be processed; the text names the field and the reason."""


def order_key(subject: str) -> str:
    """Messages with the same key keep their order: the patient (`mtm.patient.<partition>.<patient>`); an intake
    subject is one key for all its messages."""
    return ".".join(subject.split(".")[:4])


@dataclass(frozen=True)
class Delivery:
    subject: str
    stream: str
    stream_seq: int
    deliveries: int
    headers: Mapping[str, str]
    data: bytes
    raw: Msg = field(repr=False, compare=False)

    @classmethod
    def of(cls, msg: Msg) -> Delivery:
        meta = msg.metadata
        return cls(
            subject=msg.subject,
            stream=meta.stream,
            stream_seq=meta.sequence.stream,
            deliveries=meta.num_delivered,
            headers=dict(msg.headers or {}),
            data=msg.data,
            raw=msg,
        )

    @property
    def order_key(self) -> str:
        return order_key(self.subject)


@dataclass(frozen=True)
class Accepted(Generic[T]):
    delivery: Delivery
    value: T


Apply = Callable[[asyncpg.Connection, Sequence[Accepted[T]]], Awaitable[int | None]]
Decode = Callable[[Delivery], "T | Awaitable[T]"]


@dataclass(frozen=True)
class BatchConsumer(Generic[T]):
    """What a service declares per inbound subject; the processor does the rest.

    `decode` turns one message into what `apply` needs (it may be async, and may do the message's own work,
    such as deciding the events it causes); it raises `InvalidMessage`, `ValidationError` or `ValueError`
    for a message that can never be processed. `apply` writes a whole batch in one transaction and must be
    idempotent: a batch can be delivered again after a crash between commit and acknowledgement. It returns
    how many messages had an effect (the rest were seen before), or None to count them all.
    """

    durable: str
    stream: str
    filter_subjects: tuple[str, ...]
    decode: Decode[T]
    apply: Apply[T]
    after_commit: Callable[[], None] | None = None
    partitioned_by: tuple[type[EventEnvelope], ...] = ()
    """The patient events it reads; set, the consumer can be split into groups of patient partitions."""
    prepare: Callable[[Sequence[Delivery]], Awaitable[None]] | None = None
    """Runs once per batch before its messages are decoded (e.g. fetch the patients' keys in one request)."""
    retiring: bool = False
    """Kept only to drain an earlier version's durable (`Reaction.retiring`): never created, deleted once drained."""
    linger_s: float = 0.0
    """After a batch that left nothing waiting, how long to wait before fetching again (0: fetch at once)."""

    def group_filters(self, group: int, groups: int) -> tuple[str, ...]:
        if not self.partitioned_by or groups == 1:
            return self.filter_subjects
        partitions = range(group, PATIENT_PARTITIONS, groups)
        return tuple(f for cls in self.partitioned_by for f in partition_filters(cls, partitions))


def describe_invalid(exc: Exception) -> str:
    """Field path and reason, e.g. `data.patient.birth_date: Input should be a valid date`."""
    if isinstance(exc, ValidationError):
        parts = []
        for error in exc.errors()[:8]:
            if error["type"] == "json_invalid":
                parts.append(f"body: not valid JSON ({error['ctx'].get('error', error['msg'])})")
                continue
            loc = ".".join(str(p) for p in error["loc"]) or "body"
            parts.append(f"{loc}: {error['msg']}")
        more = len(exc.errors()) - 8
        if more > 0:
            parts.append(f"... and {more} more")
        return "; ".join(parts)
    if isinstance(exc, json.JSONDecodeError):
        return f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class ReadBatch(Generic[T]):
    """A fetched batch decoded and cleared of what was parked, ready to be applied."""

    deliveries: Sequence[Delivery]
    accepted: Sequence[Accepted[T]]
    invalid: Sequence[tuple[Delivery, str]]
    started: float


class BatchProcessor(Generic[T]):
    """Applies fetched batches exactly once in effect, and never lets one message hold up or lose another.

    * Each message is read on its own: one that is too large, not JSON, nested too deeply, against its contract,
      or that breaks the decoder in any other way is parked at once with its reason; its neighbours go on.
    * The batch is applied in one transaction (idempotent by event id), then acknowledged. When it fails, its
      messages are retried one by one: a failing message is nak'd with back-off (and everything after it for
      the same patient, to keep per-patient order) and parked once it reached `max_deliver`.
    * A failure of the infrastructure (Postgres or NATS down, restarting, timing out) is not the message's
      fault: the batch in hand is retried in place, its ack deadline kept alive, until the infrastructure is
      back; nothing is nak'd, parked or counted for it.
    * A dead letter too large for NATS keeps its body in the service's object store and carries a reference.
    """

    def __init__(
        self,
        consumer: BatchConsumer[T],
        *,
        service: str,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        max_deliver: int,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_payload: int = NATS_DEFAULT_MAX_PAYLOAD,
        after_commit: Callable[[], None] = lambda: None,
        observe_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self._service = service
        self._pool = pool
        self._js = js
        self._max_deliver = max_deliver
        self._max_bytes = max_bytes
        self._max_payload = max_payload
        self._after_commit = after_commit
        self._dlq_subject = dead_letter_subject(service, consumer.durable)
        self._bodies: Any = None
        self.stopping = asyncio.Event()
        self._observe_batch = observe_batch
        # What the service's /metrics reports, counted as plain numbers (read when scraped).
        self.consumed = 0
        self.acked = 0
        self.naked = 0
        self.applied = 0
        self.parked = 0
        self.skipped_erased = 0
        self.waited_out = 0
        """Infrastructure failures waited out in place (none of them counted against a message)."""

    async def handle(self, messages: Sequence[Msg]) -> None:
        await self.commit(await self.read(messages))

    async def read(self, messages: Sequence[Msg]) -> ReadBatch[T]:
        """Decode a fetched batch and park what can never be read; nothing of it is applied or acknowledged yet.

        A pull loop may read the next batch while the previous one commits, as long as the two share no
        `order_key`: what a message's decoding looks up (its patient's state) must be as the batch before left it.
        """
        started = time.perf_counter()
        self.consumed += len(messages)
        deliveries = [Delivery.of(m) for m in messages]
        accepted, invalid = await self._until_infrastructure_answers(deliveries, partial(self._decode_all, deliveries))
        await self._until_infrastructure_answers(deliveries, partial(self._park, invalid))
        return ReadBatch(deliveries, accepted, invalid, started)

    async def commit(self, batch: ReadBatch[T]) -> None:
        """Apply a read batch in one transaction and acknowledge it (one by one if the batch fails)."""
        try:
            await self._commit(batch)
        finally:
            if self._observe_batch is not None:
                self._observe_batch(len(batch.deliveries), time.perf_counter() - batch.started)

    async def _commit(self, batch: ReadBatch[T]) -> None:
        accepted, invalid = batch.accepted, batch.invalid
        try:
            await self._until_infrastructure_answers(
                batch.deliveries, partial(self._apply_in_one_transaction, accepted)
            )
        except Exception as exc:
            log.warning(
                "batch failed; retrying one by one",
                consumer=self.consumer.durable,
                count=len(accepted),
                error_type=type(exc).__name__,
            )
            await self._apply_one_by_one(accepted)
        else:
            await self._ack_all([a.delivery for a in accepted])
            self.acked += len(accepted)
        await self._ack_all([d for d, _ in invalid])
        self.acked += len(invalid)

    async def _decode_all(self, deliveries: Sequence[Delivery]) -> tuple[list[Accepted[T]], list[tuple[Delivery, str]]]:
        if self.consumer.prepare is not None:
            try:
                # What `_decode` parks unread is not read ahead either.
                await self.consumer.prepare([d for d in deliveries if self._unread_reason(d) is None])
            except Exception as exc:
                if is_transient(exc):
                    raise
                # One message can break what is done for the whole batch at once (a key request naming a patient
                # no key can exist for): each is then read on its own, and only what cannot be read is parked.
                log.warning(
                    "batch preparation failed; reading each message on its own",
                    consumer=self.consumer.durable,
                    count=len(deliveries),
                    error_type=type(exc).__name__,
                )
        accepted: list[Accepted[T]] = []
        invalid: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            try:
                reason = await self._decode(delivery, accepted)
            except ErasedPatient:
                # Nothing wrong with it: the patient was erased, so the event is no longer to be read.
                self.skipped_erased += 1
                await delivery.raw.ack()
                self.acked += 1
                continue
            if reason is not None:
                invalid.append((delivery, reason))
        return accepted, invalid

    async def _decode(self, delivery: Delivery, accepted: list[Accepted[T]]) -> str | None:
        """Read one message into `accepted`, or say why it can never be read; infrastructure failures propagate."""
        if (reason := self._unread_reason(delivery)) is not None:
            return reason
        try:
            value = self.consumer.decode(delivery)
            if inspect.isawaitable(value):
                value = await value
        except ErasedPatient:
            raise
        except (InvalidMessage, ValidationError, ValueError) as exc:
            return describe_invalid(exc)
        except RecursionError:
            return "body: nested too deeply to read"
        except Exception as exc:
            if is_transient(exc):
                raise
            # Not a contract violation we know, but this message broke the reader: park it, keep the others.
            log.error(
                "message could not be read",
                consumer=self.consumer.durable,
                stream_seq=delivery.stream_seq,
                error_type=type(exc).__name__,
            )
            return f"could not be read ({type(exc).__name__})"
        accepted.append(Accepted(delivery, value))  # type: ignore[arg-type]
        return None

    def _unread_reason(self, delivery: Delivery) -> str | None:
        """Why a message is parked without being read, if it is."""
        size = len(delivery.data)
        if size > self._max_bytes:
            return f"body: {size} bytes, over the {self._max_bytes} bytes this consumer accepts"
        if delivery.deliveries > self._max_deliver + CRASH_ALLOWANCE:
            return f"delivered {delivery.deliveries} times without an outcome (it may stop the service that reads it)"
        return None

    async def _until_infrastructure_answers(
        self, deliveries: Sequence[Delivery], attempt: Callable[[], Awaitable[R]]
    ) -> R:
        """Run `attempt`; while it fails because Postgres or NATS is away, keep the messages in hand and retry."""
        tries = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not is_transient(exc) or self.stopping.is_set():
                    raise
                tries += 1
                self.waited_out += 1
                log.warning(
                    "infrastructure unavailable; holding the batch",
                    consumer=self.consumer.durable,
                    count=len(deliveries),
                    attempt=tries,
                    error_type=type(exc).__name__,
                )
                await self._keep_alive(deliveries)
                await asyncio.sleep(backoff(tries - 1))

    @staticmethod
    async def _keep_alive(deliveries: Sequence[Delivery]) -> None:
        """Push the ack deadline back, so the server does not redeliver (and count) what is still in hand."""
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.raw.in_progress()

    async def _apply_in_one_transaction(self, accepted: Sequence[Accepted[T]]) -> None:
        if not accepted:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            effective = await self.consumer.apply(conn, accepted)
        self.applied += len(accepted) if effective is None else effective
        if effective is not None and effective < len(accepted):
            log.info(
                "redelivered messages skipped", consumer=self.consumer.durable, duplicates=len(accepted) - effective
            )
        self._after_commit()
        if self.consumer.after_commit is not None:
            self.consumer.after_commit()

    async def _apply_one_by_one(self, accepted: Sequence[Accepted[T]]) -> None:
        blocked: set[str] = set()
        for item in accepted:
            delivery = item.delivery
            if delivery.order_key in blocked:
                await self._nak(delivery)
                continue
            try:
                await self._until_infrastructure_answers([delivery], partial(self._apply_in_one_transaction, [item]))
            except Exception as exc:
                if delivery.deliveries >= self._max_deliver:
                    reason = f"failed {delivery.deliveries} deliveries ({type(exc).__name__})"
                    await self._until_infrastructure_answers([delivery], partial(self._park, [(delivery, reason)]))
                    await delivery.raw.ack()
                    self.acked += 1
                else:
                    log.warning(
                        "message failed; redelivery scheduled",
                        consumer=self.consumer.durable,
                        stream_seq=delivery.stream_seq,
                        deliveries=delivery.deliveries,
                        error_type=type(exc).__name__,
                    )
                    blocked.add(delivery.order_key)
                    await self._nak(delivery)
            else:
                await delivery.raw.ack()
                self.acked += 1

    async def _park(self, items: Sequence[tuple[Delivery, str]]) -> None:
        """Publish each message with its reason to this service's dead-letter stream (deduplicated by sequence)."""
        if not items:
            return
        now = datetime.now(UTC)
        futures = []
        for delivery, reason in items:
            letter = DeadLetter.of(
                payload=delivery.data,
                parked_at=now,
                service=self._service,
                consumer=self.consumer.durable,
                original_subject=delivery.subject,
                original_stream=delivery.stream,
                original_sequence=delivery.stream_seq,
                original_headers={k: str(v)[:MAX_HEADER_CHARS] for k, v in list(delivery.headers.items())[:32]},
                reason=reason[:MAX_REASON_CHARS],
                deliveries=delivery.deliveries,
            )
            msg_id = f"{self.consumer.durable}:{delivery.stream}:{delivery.stream_seq}"
            body = letter.model_dump_json().encode()
            if len(body) > self._max_payload - LETTER_HEADROOM:
                body = (await self._externalize(letter, delivery, msg_id)).model_dump_json().encode()
            futures.append(await self._js.publish_async(self._dlq_subject, body, headers={MSG_ID_HEADER: msg_id}))
            log.warning(
                "message dead-lettered",
                consumer=self.consumer.durable,
                subject=delivery.subject,
                stream_seq=delivery.stream_seq,
                deliveries=delivery.deliveries,
            )
        await asyncio.wait_for(asyncio.gather(*futures), PARK_CONFIRM_TIMEOUT_S)
        self.parked += len(items)

    async def _externalize(self, letter: DeadLetter, delivery: Delivery, name: str) -> DeadLetter:
        """Keep the body in the service's dead-letter object store; the letter keeps the reason and a reference."""
        if self._bodies is None:
            self._bodies = await self._js.object_store(dead_letter_bucket(self._service))
        object_name = name.replace(":", "_")
        await self._bodies.put(object_name, delivery.data)
        return letter.without_body(object_name)

    async def _nak(self, delivery: Delivery) -> None:
        delay = NAK_DELAYS_S[min(delivery.deliveries, len(NAK_DELAYS_S)) - 1]
        await delivery.raw.nak(delay=delay)
        self.naked += 1

    async def _nak_all(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await self._nak(delivery)

    @staticmethod
    async def _ack_all(deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await delivery.raw.ack()


def patient_event_consumer(
    durable: str,
    event_types: Sequence[type[EventEnvelope]],
    apply: Apply[Any],
    *,
    decode: Decode[Any],
    after_commit: Callable[[], None] | None = None,
) -> BatchConsumer[Any]:
    """A consumer of some event types on the patient log, splittable into groups of patient partitions."""
    return BatchConsumer(
        durable=durable,
        stream=PATIENT_EVENTS_STREAM,
        filter_subjects=tuple(event_filter(cls) for cls in event_types),
        decode=decode,
        apply=apply,
        after_commit=after_commit,
        partitioned_by=tuple(event_types),
    )
