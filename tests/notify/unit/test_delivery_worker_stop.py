"""The delivery worker ends when notify stops, also when a notification's wake-up lands with the stop."""

from __future__ import annotations

import asyncio

import pytest
from support.stopping import ended

from mtm.notify.delivery_worker import DeliveryWorker

pytestmark = pytest.mark.unit


async def test_the_delivery_worker_ends_when_a_wake_up_lands_with_its_stop():
    """On Python 3.11, `wait_for(wake.wait(), ...)` drops a cancellation that lands as the wake-up is set: the
    worker went on delivering, and the service's stop waited for it for ever."""
    wake, stopping = asyncio.Event(), asyncio.Event()
    worker = DeliveryWorker(
        None,  # type: ignore[arg-type]
        webhook=None,
        inbox=None,  # type: ignore[arg-type]
        directory=None,  # type: ignore[arg-type]
        webhook_template=None,
        policy=None,  # type: ignore[arg-type]
        lease_s=60.0,
        poll_s=3600.0,
        wake=wake,
        stopping=stopping,
    )
    looked = asyncio.Event()

    async def nothing_due() -> int:
        looked.set()
        return 0

    worker.deliver_due = nothing_due  # type: ignore[method-assign]
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(looked.wait(), 5)
    await asyncio.sleep(0.05)  # the worker goes on to wait for a wake-up (no I/O in between)
    # A handler commits a notification and wakes the worker as the service stops it.
    wake.set()
    stopping.set()
    running.cancel()
    assert await ended(running), "the delivery worker still running after its stop"
