"""Waiting for a stopped task without cancelling it: what tests of a cancellation lost on its way in need."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

# Generous: a loop that ends on its stop signal does so within a round; one that does not never ends.
ENDS_WITHIN_S = 10.0


async def ended(stopping: Awaitable[Any], within_s: float = ENDS_WITHIN_S) -> bool:
    """Whether `stopping` (a task, or a stop to run as one) ended within `within_s`.

    Waited for with `asyncio.wait`: a timed-out `wait_for` would cancel it a second time, which would end a loop
    whose first cancellation was lost and hide the bug. One still running is then cancelled, so it does not outlive
    the test.
    """
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:
        task.cancel()
    return bool(done)
