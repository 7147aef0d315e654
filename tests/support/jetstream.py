"""Small JetStream helpers for tests: collect what reaches a subject, read a stream, wait for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy


async def wait_for(
    condition: Callable[[], Awaitable[Any] | Any], *, timeout_s: float = 20.0, every_s: float = 0.05
) -> Any:
    """Poll until `condition` returns something truthy; fail with what it last returned."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s (last value: {last!r})")


async def stream_messages(nc: Client, stream: str, subject: str = ">") -> list[Msg]:
    """Every message stored on `subject` in `stream`, in stream order (an ephemeral ordered read)."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    found: list[Msg] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                break
            found.append(msg)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


class Collector:
    """A core NATS subscription that records everything published on a subject, like a tool would see it."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self._sub: Any = None

    async def start(self, nc: Client, subject: str) -> Collector:
        async def on_msg(msg: Msg) -> None:
            self.messages.append(msg)

        self._sub = await nc.subscribe(subject, cb=on_msg)
        await nc.flush()
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def read_events(nc: Client, cls: type, messages: list[Msg]) -> list[Any]:
    """Events as a service reads them: sealed data opened with keys the key keeper lends (tests are privileged)."""
    from mtm.contracts import EVENTS
    from mtm.platform.bodies import EventBodies
    from mtm.platform.crypto import KeyRing
    from mtm.platform.keys import nats_key_source
    from mtm.platform.reading import EventReader

    reader = EventReader(EVENTS, KeyRing(nats_key_source(nc)), EventBodies(nc))
    await reader.prepare((m.subject, m.data) for m in messages)
    return [(await reader.read_as(cls, m.subject, m.data))[0] for m in messages]
