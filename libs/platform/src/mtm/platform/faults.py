"""Which failures are the infrastructure's (retry, never blame the message) and keeping background tasks alive.

An outage is not a poison message: a database restart or a NATS reconnect must neither dead-letter what was in
hand nor kill the task that was handling it. Background tasks (the outbox relay, delivery workers, timers, leases)
run supervised: any exception is logged by type and the task starts again after a back-off; a task that keeps
failing makes its service report not ready instead of running half dead. Each also ends when its stop signal is
set, not only when its task is cancelled: a cancellation can be lost on its way in, and a stop waiting on the task
would then wait for ever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from nats import errors as nats_errors
from nats.js import errors as js_errors

from mtm.platform.bodies import StoredBodyMissing
from mtm.platform.logging import get_logger

log = get_logger(__name__)

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,  # connection refused or reset, DNS, sockets
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # the connection went away under a query
    asyncpg.exceptions.InternalClientError,  # seen on a Postgres restart mid-query
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock: try again
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.NoServersError,
    nats_errors.NoRespondersError,  # a service asked (e.g. the key keeper) is restarting
    nats_errors.StaleConnectionError,
    nats_errors.TimeoutError,
    nats_errors.FlushTimeoutError,
    nats_errors.OutboundBufferLimitError,
    js_errors.ServiceUnavailableError,
    # A body the log references and its object store does not give back whole: the store is away or damaged (its
    # writers store before they append), so the event is held until an operator restores it, never parked.
    StoredBodyMissing,
)
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A background task that failed this many times in a row without a clean round reports its service not ready.
UNHEALTHY_AFTER = 5


def is_transient(exc: BaseException) -> bool:
    """Whether the failure is the infrastructure's (worth waiting out) rather than the message's or the code's."""
    return isinstance(exc, TRANSIENT)


def backoff(attempt: int) -> float:
    return BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]


@dataclass
class TaskHealth:
    """What a supervised task last did: failures since its last good round, and the type of the last one."""

    name: str
    failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.monotonic)

    @property
    def healthy(self) -> bool:
        return self.failures < UNHEALTHY_AFTER

    def ok(self) -> None:
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = type(exc).__name__


async def until_set(timeout_s: float, *events: asyncio.Event) -> None:
    """Until one of `events` is set, or `timeout_s` passed: what a background loop waits on between rounds, its stop
    signal among the events.

    Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11 that returns normally when the task is cancelled
    just as the event is set (gh-86296, fixed in 3.12 by gh-98518), which is what a stop that wakes a loop and
    cancels it does. `asyncio.wait` raises every cancellation.
    """
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def supervise(
    name: str, run: Callable[[TaskHealth], Awaitable[None]], health: TaskHealth, stopping: asyncio.Event
) -> None:
    """Run `run` until it returns, is cancelled or `stopping` is set; restart it after any exception, with back-off.

    `run` reports good rounds with `health.ok()`; each crash counts as a failure. Only the exception's type is
    logged: its text may carry data from the message or row that caused it. A crash after `stopping` was set is
    not restarted: the cancellation meant to end the task may have been lost in `run`.
    """
    while not stopping.is_set():
        try:
            await run(health)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            health.failed(exc)
            health.restarts += 1
            delay = backoff(health.failures - 1)
            log.error(
                "background task failed; restarting",
                consumer=name,
                error_type=type(exc).__name__,
                attempt=health.failures,
                elapsed_ms=int(delay * 1000),
            )
            await until_set(delay, stopping)
