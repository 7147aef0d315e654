"""Stopping the web app's live feed ends its reader task and every open event stream, whatever they were doing."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest
from support.stopping import ended

from mtm.web.live import QUEUE_SIZE, LiveFeed

pytestmark = pytest.mark.unit


class Subscription:
    async def unsubscribe(self) -> None:
        pass


class Connection:
    """NATS as the feed uses it at start and stop: subscriptions, which deliver nothing by themselves, and a flush."""

    async def subscribe(self, subject: str, cb: Any = None) -> Subscription:
        return Subscription()

    async def flush(self) -> None:
        pass


async def test_stop_ends_the_feeds_reader_when_its_cancellation_is_lost_in_a_batch():
    """The reader opens a batch with a key request (nats-py's `wait_for`), which can drop a cancellation on Python
    3.11; the reader then waited for events that no longer came, and the stop with it."""
    feed = LiveFeed(Connection())  # type: ignore[arg-type]
    opening = asyncio.Event()

    async def open_losing_the_cancellation(batch: list[Any]) -> None:
        opening.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)

    feed._open = open_losing_the_cancellation  # type: ignore[method-assign]
    await feed.start()
    with feed.listen():
        await feed._on_message(SimpleNamespace(subject="mtm.patient.3.p1.referral_requested.v1", data=b""))  # type: ignore[arg-type]
        await asyncio.wait_for(opening.wait(), 5)
        assert await ended(feed.stop()), "stop() still waiting for the feed's reader"


async def test_stop_ends_an_event_stream_that_fell_behind():
    """A stream whose queue is full of changes it has not sent yet still gets its end (it missed a change)."""
    feed = LiveFeed(Connection())  # type: ignore[arg-type]
    await feed.start()
    with feed.listen() as queue:
        for _ in range(QUEUE_SIZE):
            queue.put_nowait(SimpleNamespace())  # type: ignore[arg-type]
        await feed.stop()
        left = [queue.get_nowait() for _ in range(queue.qsize())]
    assert left[-1] is None
