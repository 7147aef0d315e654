"""A retiring consumer's durable is deleted only once the server holds nothing of it pending or unacknowledged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from nats.js.errors import NotFoundError

from mtm.platform.runtime import ServiceRuntime, pull_loop

pytestmark = pytest.mark.unit
DURABLE = "old-reader"


class JetStream:
    """The server's view of one durable: its counts, or gone; records what was deleted."""

    def __init__(self, pending: int = 0, unacknowledged: int = 0, *, exists: bool = True) -> None:
        self.counts = (pending, unacknowledged)
        self.exists = exists
        self.deleted: list[str] = []
        self.bound = 0
        self.failure: Exception | None = None

    async def consumer_info(self, stream: str, durable: str) -> SimpleNamespace:
        if self.failure is not None:
            raise self.failure
        if not self.exists:
            raise NotFoundError
        return SimpleNamespace(num_pending=self.counts[0], num_ack_pending=self.counts[1])

    async def delete_consumer(self, stream: str, durable: str) -> bool:
        self.deleted.append(durable)
        self.exists = False
        return True

    async def pull_subscribe_bind(self, **_: object) -> Idle:
        self.bound += 1
        return Idle()


class Idle:
    """A durable with nothing left to hand out: every fetch times out."""

    async def fetch(self, batch: int, **_: float) -> list[SimpleNamespace]:
        await asyncio.sleep(0)
        raise TimeoutError

    async def unsubscribe(self) -> None:
        pass


class SteadyFeed:
    """One message, then the next fetch waits for ever: a feed that never leaves a fetch empty-handed."""

    def __init__(self) -> None:
        last = SimpleNamespace(
            subject="mtm.patient.3.p1.transition_of_care_recorded.v1", metadata=SimpleNamespace(num_pending=0)
        )
        self.batches = [[last]]

    async def fetch(self, batch: int, **_: float) -> list[SimpleNamespace]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def unsubscribe(self) -> None:
        pass


class Processor:
    """Commits what it read; the server's counts drop to nothing once a batch is committed (acknowledged)."""

    def __init__(self, js: JetStream) -> None:
        self._js = js
        self.consumed, self.applied, self.parked = 0, 0, 0

    async def read(self, messages: list[SimpleNamespace]) -> list[SimpleNamespace]:
        self.consumed += len(messages)
        return messages

    async def commit(self, messages: list[SimpleNamespace]) -> None:
        self.applied += len(messages)
        self._js.counts = (0, 0)


def runtime(js: JetStream) -> SimpleNamespace:
    processor = SimpleNamespace(consumed=3, applied=2, parked=1)
    return SimpleNamespace(
        jetstream=js,
        draining={DURABLE},
        processors={DURABLE: processor},
        settings=SimpleNamespace(batch_size=8),
    )


CONSUMER = SimpleNamespace(durable=DURABLE, stream="PATIENT_EVENTS", retiring=True)


async def retire(state: SimpleNamespace) -> bool:
    return await ServiceRuntime.retire_if_drained(state, CONSUMER, DURABLE)  # type: ignore[arg-type]


@pytest.mark.parametrize(("pending", "unacknowledged"), [(1, 0), (0, 1), (4, 2)])
async def test_a_durable_still_holding_messages_is_kept(pending: int, unacknowledged: int) -> None:
    js = JetStream(pending, unacknowledged)
    state = runtime(js)
    assert not await retire(state)
    assert js.deleted == [] and state.draining == {DURABLE}


async def test_a_drained_durable_is_deleted_and_one_deleted_elsewhere_is_let_go() -> None:
    js = JetStream()
    state = runtime(js)
    assert await retire(state)
    assert js.deleted == [DURABLE] and state.draining == set()
    elsewhere = JetStream(exists=False)
    state = runtime(elsewhere)
    assert await retire(state)
    assert elsewhere.deleted == [] and state.draining == set()


async def test_a_server_that_does_not_answer_keeps_the_durable_for_the_next_check() -> None:
    js = JetStream()
    js.failure = TimeoutError()
    state = runtime(js)
    assert not await retire(state)
    assert js.deleted == [] and state.draining == {DURABLE}


async def test_the_pull_loop_of_a_retiring_consumer_ends_once_its_durable_is_deleted() -> None:
    js = JetStream(pending=0, unacknowledged=1)
    state = runtime(js)
    state.retire_if_drained = lambda consumer, durable: retire(state)
    loop = asyncio.create_task(pull_loop(state, CONSUMER, DURABLE, asyncio.Event()))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not loop.done() and js.deleted == []
    js.counts = (0, 0)
    await asyncio.wait_for(loop, 5)
    assert js.deleted == [DURABLE]
    # Its lease taken again later (a lease session lost and found): nothing left to bind to.
    await asyncio.wait_for(pull_loop(state, CONSUMER, DURABLE, asyncio.Event()), 5)  # type: ignore[arg-type]
    assert js.bound == 1


async def test_a_retiring_consumer_caught_up_under_a_steady_feed_is_deleted_after_its_small_batch() -> None:
    js = JetStream(pending=1)
    state = runtime(js)
    state.processors = {DURABLE: Processor(js)}
    state.retire_if_drained = lambda consumer, durable: retire(state)
    feed = SteadyFeed()

    async def bind(**_: object) -> SteadyFeed:
        return feed

    state.jetstream.pull_subscribe_bind = bind
    await asyncio.wait_for(pull_loop(state, CONSUMER, DURABLE, asyncio.Event()), 5)  # type: ignore[arg-type]
    assert js.deleted == [DURABLE] and state.processors[DURABLE].applied == 1
