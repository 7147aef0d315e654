"""Durable timers: deadlines kept in a projection, and the events their passing causes, recorded exactly once.

A deadline is state like any other (a due time in a projection table, set by an event), so it survives restarts
and rebuilds. A timer looks for deadlines that passed and are not yet marked, and records the events that
say so through the unit of work: the projection marks them in the same transaction, so the next look does not
find them again, and their ids are derived from the item and its deadline, so two looks can never record twice.
One replica at a time runs each timer (a Postgres advisory lock).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from mtm.contracts import EventEnvelope
from mtm.platform import metrics, tracing
from mtm.platform.faults import TaskHealth, until_set
from mtm.platform.logging import get_logger
from mtm.platform.projection import WRITER_LOCK_KEY, Projection, UnitOfWork

log = get_logger(__name__)

TRY_TIMER_LOCK = "SELECT pg_try_advisory_xact_lock($1::int, $2::int)"
# While a rebuild swaps the tables in (it holds the writer lock exclusively), a round is skipped rather than
# waited out: a waiting timer would hold a pooled connection the outbox relay needs to let the swap finish.
TRY_LOCK_AS_WRITER = "SELECT pg_try_advisory_xact_lock_shared($1)"
TIMER_LOCK_NAMESPACE = 7_320_005
# How many due items one round takes; the rest are taken by the next round, right away.
ROUND_LIMIT = 500


@dataclass(frozen=True)
class Timer:
    """A deadline watch of a service, declared in its handler table.

    `due` is an adapter query on the projection: what passed `now` and is not marked yet (at most `limit`).
    `fire` is a use case: the events the passing of one item causes (ids derived from the item and its deadline).
    """

    name: str
    every_s: float
    due: Callable[[asyncpg.Connection, datetime, int], Awaitable[Sequence[Any]]]
    fire: Callable[[Any, datetime], Sequence[EventEnvelope]]
    emits: tuple[type[EventEnvelope], ...] = ()
    """The events `fire` may record (what the service's AsyncAPI document says it publishes)."""

    @property
    def lock_key(self) -> int:
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF


async def fire_due(conn: asyncpg.Connection, timer: Timer, projection: Projection, now: datetime) -> int:
    """One round in one transaction; returns how many events were recorded (0 when another replica holds it)."""
    async with conn.transaction():
        if not await conn.fetchval(TRY_TIMER_LOCK, TIMER_LOCK_NAMESPACE, timer.lock_key):
            return 0
        if not await conn.fetchval(TRY_LOCK_AS_WRITER, WRITER_LOCK_KEY):
            return 0
        uow = UnitOfWork(conn, projection)
        await uow.begin()
        items = await timer.due(conn, now, ROUND_LIMIT)
        events = [event for item in items for event in _fired(timer, item, now)]
        return len(await uow.record(events, _timer_spans(timer, events)))


def _fired(timer: Timer, item: Any, now: datetime) -> Sequence[EventEnvelope]:
    """What the passing of one item records. An item whose use case fails records nothing and stays due: it is
    logged at every round, and no longer fails the round of every other item with it (one member's evaluation
    raising would have stopped the program's evaluation of everyone)."""
    try:
        return timer.fire(item, now)
    except Exception as exc:
        patient_id = getattr(item, "patient_id", None) or (item.get("patient_id") if hasattr(item, "get") else None)
        log.warning(
            "timer item failed; it stays due",
            consumer=timer.name,
            patient_ref=f"Patient/{patient_id}" if patient_id else None,
            error_type=type(exc).__name__,
        )
        metrics.current().counter(
            "mtm_timer_item_failures", "Items a timer's use case failed on (each stays due).", ("timer",)
        ).labels(timer.name).inc()
        return ()


def _timer_spans(timer: Timer, events: Sequence[EventEnvelope]) -> dict[Any, dict[str, str]] | None:
    """Each event a timer records starts a step of its own flow (a root of the flow's trace); None when off."""
    if not tracing.enabled() or not events:
        return None
    headers = {}
    for event in events:
        span = tracing.start(
            f"timer {timer.name}",
            flow=event.correlation_id,
            attributes={
                "mtm.timer": timer.name,
                "mtm.event_type": type(event).EVENT_NAME,
                "messaging.message.id": str(event.id),
                "mtm.correlation_id": str(event.correlation_id),
            },
        )
        headers[event.id] = tracing.headers_for(tracing.context_of(span))
        span.end()
    return headers


async def run_timer(
    pool: asyncpg.Pool,
    timer: Timer,
    projection: Projection,
    *,
    after_record: Callable[[], None],
    stopping: asyncio.Event,
    health: TaskHealth | None = None,
) -> None:
    """Look every `every_s` until stopped (run supervised: a failure restarts it after a back-off).

    It ends when `stopping` is set, not only when cancelled: a cancellation lost on its way in would otherwise leave
    the service's stop waiting for this loop for ever.
    """
    while not stopping.is_set():
        async with pool.acquire() as conn:
            recorded = await fire_due(conn, timer, projection, datetime.now(UTC))
        if health is not None:
            health.ok()
        if recorded:
            log.info("timer fired", consumer=timer.name, count=recorded)
            metrics.current().counter(
                "mtm_timer_events", "Events recorded by timers (deadlines that passed).", ("timer",)
            ).labels(timer.name).inc(recorded)
            after_record()
            if recorded >= ROUND_LIMIT:
                continue
        await until_set(timer.every_s, stopping)
