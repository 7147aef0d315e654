"""Batch consumers: fetch a batch, apply it in one transaction, park what cannot be processed."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import asyncpg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from mtm.contracts import DeadLetter, EventEnvelope
from mtm.contracts.subjects import (
    PATIENT_EVENTS_STREAM,
    PATIENT_PARTITIONS,
    dead_letter_subject,
    event_filter,
    partition_filters,
)
from mtm.platform.logging import get_logger
from mtm.platform.outbox import MSG_ID_HEADER

log = get_logger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=EventEnvelope)

# Redelivery back-off for naks (JetStream's consumer `backoff` only applies to ack timeouts).
NAK_DELAYS_S = (0.5, 2.0, 5.0, 15.0, 30.0)
MAX_REASON_CHARS = 2000


class InvalidMessage(ValueError):
    """A message that can never be processed; the text names the field and the reason."""


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
        """Messages with the same key keep their order: the patient (`mtm.patient.<partition>.<patient>`)."""
        return ".".join(self.subject.split(".")[:4])


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


class BatchProcessor(Generic[T]):
    """Applies fetched batches exactly once in effect.

    The batch is applied in one transaction (whose writes are idempotent by event id), then acknowledged.
    When the batch fails, messages are retried one by one: a failing message is nak'd with back-off (and
    everything after it for the same patient, to keep per-patient order) and dead-lettered with its reason
    once it reached `max_deliver`. Invalid messages are dead-lettered at once; good ones still flow.
    """

    def __init__(
        self,
        consumer: BatchConsumer[T],
        *,
        service: str,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        max_deliver: int,
        after_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.consumer = consumer
        self._service = service
        self._pool = pool
        self._js = js
        self._max_deliver = max_deliver
        self._after_commit = after_commit
        self._dlq_subject = dead_letter_subject(service, consumer.durable)
        self.applied = 0
        self.parked = 0

    async def handle(self, messages: Sequence[Msg]) -> None:
        deliveries = [Delivery.of(m) for m in messages]
        accepted: list[Accepted[T]] = []
        invalid: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            try:
                value = self.consumer.decode(delivery)
                if inspect.isawaitable(value):
                    value = await value
                accepted.append(Accepted(delivery, value))  # type: ignore[arg-type]
            except (InvalidMessage, ValidationError, ValueError) as exc:
                invalid.append((delivery, describe_invalid(exc)))

        try:
            await self._park(invalid)
        except Exception as exc:
            log.warning(
                "dead-lettering failed; will retry", consumer=self.consumer.durable, error_type=type(exc).__name__
            )
            await self._nak_all([d for d, _ in invalid])
            invalid = []
        try:
            await self._apply_in_one_transaction(accepted)
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
        await self._ack_all([d for d, _ in invalid])

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
                await self._apply_in_one_transaction([item])
            except Exception as exc:
                if delivery.deliveries >= self._max_deliver:
                    reason = f"failed {delivery.deliveries} deliveries: {type(exc).__name__}: {exc}"
                    try:
                        await self._park([(delivery, reason)])
                    except Exception:
                        blocked.add(delivery.order_key)
                        await self._nak(delivery)
                        continue
                    await delivery.raw.ack()
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
                original_headers={k: str(v) for k, v in delivery.headers.items()},
                reason=reason[:MAX_REASON_CHARS],
                deliveries=delivery.deliveries,
            )
            msg_id = f"{self.consumer.durable}:{delivery.stream}:{delivery.stream_seq}"
            futures.append(
                await self._js.publish_async(
                    self._dlq_subject, letter.model_dump_json().encode(), headers={MSG_ID_HEADER: msg_id}
                )
            )
            log.warning(
                "message dead-lettered",
                consumer=self.consumer.durable,
                subject=delivery.subject,
                stream_seq=delivery.stream_seq,
                deliveries=delivery.deliveries,
            )
        await asyncio.gather(*futures)
        self.parked += len(items)

    async def _nak(self, delivery: Delivery) -> None:
        delay = NAK_DELAYS_S[min(delivery.deliveries, len(NAK_DELAYS_S)) - 1]
        await delivery.raw.nak(delay=delay)

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
