"""Background loops end when their service stops, even when the cancellation of their task is lost on its way in.

Python 3.11's `asyncio.wait_for` returns normally when its task is cancelled just as the awaited call completes
(gh-86296): the cancellation is gone, and a loop that only ends when cancelled runs on while its stop waits for it.
Each test loses one the way such a call would: the awaited call swallows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from support.stopping import ended

from mtm.platform import timers
from mtm.platform.faults import TaskHealth, supervise, until_set
from mtm.platform.outbox import OutboxRelay
from mtm.platform.rebuild import Rebuilder
from mtm.platform.runtime import ServiceRuntime
from mtm.platform.timers import Timer, run_timer

pytestmark = pytest.mark.unit


async def swallow_a_cancellation(first: bool) -> None:
    """Wait until cancelled, then go on as if nothing happened (as `wait_for` does when its call completes then).

    Only the `first` time: a loop that does not end on its own must still end on the test's second cancellation.
    """
    if not first:
        await asyncio.sleep(3600)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)


class Pool:
    """Hands out one connection."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        yield self._conn


async def test_waiting_on_events_raises_a_cancellation_that_lands_as_an_event_is_set():
    """What a stop that wakes a loop and cancels it does; `wait_for(wake.wait(), ...)` would drop the cancellation."""
    wake = asyncio.Event()
    waiting = asyncio.create_task(until_set(3600, wake))
    await asyncio.sleep(0)
    wake.set()
    waiting.cancel()
    assert await ended(waiting), "until_set still waiting"
    assert waiting.cancelled()


async def test_a_background_job_that_fails_after_losing_its_cancellation_is_not_restarted_by_the_stop():
    started = asyncio.Event()
    runs = 0

    async def job(health: TaskHealth) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await swallow_a_cancellation(first=runs == 1)
        raise ConnectionResetError  # what the stop left its connection in

    runtime = ServiceRuntime(definition=None, settings=None, broker=None, consumers=[])  # type: ignore[arg-type]
    runtime._supervised("job", job)
    await asyncio.wait_for(started.wait(), 5)
    assert await ended(runtime.stop_consuming()), "stop_consuming() still waiting for the restarted job"
    assert runs == 1


async def test_a_timer_ends_when_stopped_even_if_its_cancellation_is_lost(monkeypatch: pytest.MonkeyPatch):
    looking = asyncio.Event()

    async def fire_due(conn: Any, timer: Timer, projection: Any, now: datetime) -> int:
        first = not looking.is_set()
        looking.set()
        await swallow_a_cancellation(first)
        return 0

    monkeypatch.setattr(timers, "fire_due", fire_due)
    timer = Timer("overdue-reviews", every_s=0.01, due=None, fire=None)  # type: ignore[arg-type]
    stopping = asyncio.Event()
    health = TaskHealth("timer-overdue-reviews")

    async def run(health: TaskHealth) -> None:
        await run_timer(Pool(None), timer, None, after_record=lambda: None, stopping=stopping, health=health)  # type: ignore[arg-type]

    task = asyncio.create_task(supervise("timer-overdue-reviews", run, health, stopping))
    await asyncio.wait_for(looking.wait(), 5)
    stopping.set()
    task.cancel()
    assert await ended(task), "the timer still looking after its stop"


class LockHeldElsewhere:
    """The relay lock, held by another replica's relay: every try fails; the first swallows a cancellation."""

    def __init__(self) -> None:
        self.tried = asyncio.Event()

    async def fetchval(self, query: str, *args: Any) -> bool:
        if not self.tried.is_set():
            self.tried.set()
            await swallow_a_cancellation(first=True)
        return False


async def test_a_standby_outbox_relay_ends_when_stopped_even_if_its_cancellation_is_lost():
    conn = LockHeldElsewhere()
    relay = OutboxRelay(Pool(conn), None, poll_s=0.01)  # type: ignore[arg-type]
    relay.start()
    await asyncio.wait_for(conn.tried.wait(), 5)
    assert await ended(relay.stop()), "stop() still waiting for the standby relay"


class LongLog:
    """A log the rebuild is far from through: each take brings nothing yet; the first swallows a cancellation."""

    def __init__(self) -> None:
        self.taking = asyncio.Event()
        self.last_seq = 0
        self.delivered = 0

    async def take(self, limit: int, wait_s: float) -> list[Any]:
        if not self.taking.is_set():
            self.taking.set()
            await swallow_a_cancellation(first=True)
        else:
            await asyncio.sleep(wait_s)
        return []

    async def pending_on_server(self) -> int:
        return 1_000_000

    async def caught_up_to(self, seq: int) -> bool:
        return False


async def test_a_rebuild_ends_when_its_service_stops_even_if_its_cancellation_is_lost():
    stopping = asyncio.Event()
    rebuilder = Rebuilder(
        database_url="",
        js=None,  # type: ignore[arg-type]
        projection=None,  # type: ignore[arg-type]
        scopes=(),
        reader=None,  # type: ignore[arg-type]
        reader_name="rebuild-reader",
        stopping=stopping,
    )

    async def log_end() -> int:
        return 1_000_000

    rebuilder._log_end = log_end  # type: ignore[method-assign]
    log = LongLog()
    replaying = asyncio.create_task(rebuilder._replay_batches(None, log, 0, time.monotonic()))  # type: ignore[arg-type]
    await asyncio.wait_for(log.taking.wait(), 5)
    stopping.set()
    replaying.cancel()
    assert await ended(replaying), "the rebuild still replaying after its service stopped"
