"""Stopping the consumer-group leases ends their loop even when its cancellation never arrives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mtm.platform.leases import GroupKey, GroupLeases

pytestmark = pytest.mark.unit


class Session:
    """A lease session that answers every check and grants every lock."""

    async def fetchval(self, query: str, *args: Any) -> Any:
        return True

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        return []

    async def close(self) -> None:
        pass


async def test_stop_ends_the_lease_loop_when_its_cancellation_is_lost_on_the_way_in():
    started = asyncio.Event()
    stopped: list[GroupKey] = []

    async def start(key: GroupKey) -> None:
        started.set()
        # What Python 3.11's `wait_for` can do to a cancellation that lands as its inner call completes: drop it.
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

    async def stop(key: GroupKey) -> None:
        stopped.append(key)

    async def connect() -> Session:
        return Session()

    key = GroupKey("review-medications-reconciled", 0, 1)
    leases = GroupLeases(
        connect,  # type: ignore[arg-type]
        [key],
        replicas=1,
        replica_index=0,
        takeover_after_s=10.0,
        start=start,
        stop=stop,
    )
    leases.start()
    await asyncio.wait_for(started.wait(), 5)
    stopping = asyncio.create_task(leases.stop())
    # Waited for without being cancelled on a timeout: a second cancellation would end the loop by itself.
    done, _ = await asyncio.wait({stopping}, timeout=10)
    if not done:
        stopping.cancel()
    assert done, "stop() still waiting for the lease loop"
    assert stopped == [key]
