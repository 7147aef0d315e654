"""The pull loop overlaps batches of other patients under a backlog, never a patient's batch with its last commit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from mtm.platform.runtime import COMMITS_IN_FLIGHT, TOP_UP_WAIT_S, pull_loop

pytestmark = pytest.mark.unit


def message(patient: str, *, waiting: int = 0) -> SimpleNamespace:
    """A delivery; `waiting` is what the server said was still pending after it (JetStream metadata)."""
    return SimpleNamespace(
        subject=f"mtm.patient.3.{patient}.transition_of_care_recorded.v1",
        metadata=SimpleNamespace(num_pending=waiting),
    )


# In a script of batches: this fetch finds nothing in its time.
NOTHING_CAME = None


class Subscription:
    """Hands out the scripted batches, then nothing (as a drained durable: fetch times out); notes each request."""

    def __init__(self, batches: list[list[SimpleNamespace] | Exception | None], stop: asyncio.Event) -> None:
        self._batches = batches
        self._stop = stop
        self.requests: list[tuple[int, float]] = []

    async def fetch(self, batch: int, **options: float) -> list[SimpleNamespace]:
        self.requests.append((batch, options["timeout"]))
        if self._batches:
            scripted = self._batches.pop(0)
            if scripted is NOTHING_CAME:
                raise TimeoutError
            if isinstance(scripted, Exception):
                raise scripted
            return scripted
        self._stop.set()
        raise TimeoutError

    async def unsubscribe(self) -> None:
        pass


class Processor:
    """Records when each batch is read and when its commit ends; a commit takes until the test releases it."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.releases: dict[str, asyncio.Event] = {}

    @staticmethod
    def name(messages: list[SimpleNamespace]) -> str:
        return "+".join(m.subject.split(".")[3] for m in messages)

    async def read(self, messages: list[SimpleNamespace]) -> str:
        name = self.name(messages)
        self.journal.append(f"read {name}")
        self.releases[name] = asyncio.Event()
        return name

    async def commit(self, name: str) -> None:
        await self.releases[name].wait()
        self.journal.append(f"committed {name}")


async def run_loop(
    batches: list[list[SimpleNamespace]],
    processor: Processor,
    *,
    batch_size: int = 2,
    linger_s: float = 0.0,
    stop: asyncio.Event | None = None,
    subscription: Subscription | None = None,
) -> asyncio.Task[None]:
    stop = stop or asyncio.Event()
    subscription = subscription or Subscription(batches, stop)

    async def bind(**_: object) -> Subscription:
        return subscription

    runtime = SimpleNamespace(
        processors={"durable": processor},
        jetstream=SimpleNamespace(pull_subscribe_bind=bind),
        settings=SimpleNamespace(batch_size=batch_size),
    )
    consumer = SimpleNamespace(durable="durable", stream="PATIENT_EVENTS", linger_s=linger_s, retiring=False)
    return asyncio.create_task(pull_loop(runtime, consumer, "durable", stop))  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_batch_of_other_patients_is_read_while_the_last_commits_and_a_patients_next_waits_for_it():
    processor = Processor()
    loop = await run_loop([[message("a"), message("b")], [message("c")], [message("b"), message("d")]], processor)
    await settle()
    # "c" shares no patient with "a+b": read while "a+b" still commits; "b+d" waits for the commit that holds "b".
    assert processor.journal == ["read a+b", "read c"]
    processor.releases["c"].set()
    await settle()
    assert processor.journal == ["read a+b", "read c", "committed c"]
    processor.releases["a+b"].set()
    await settle()
    assert processor.journal[3:] == ["committed a+b", "read b+d"]
    processor.releases["b+d"].set()
    await asyncio.wait_for(loop, 5)


async def test_no_more_batches_commit_at_once_than_allowed():
    processor = Processor()
    patients = [f"p{n}" for n in range(COMMITS_IN_FLIGHT + 1)]
    loop = await run_loop([[message(p)] for p in patients], processor)
    await settle()
    # The last batch is read, but its commit starts only once the oldest one is done.
    assert processor.journal == [f"read {p}" for p in patients]
    processor.releases[patients[-1]].set()
    await settle()
    assert f"committed {patients[-1]}" not in processor.journal
    processor.releases[patients[0]].set()
    await settle()
    assert processor.journal[-2:] == [f"committed {patients[0]}", f"committed {patients[-1]}"]
    for p in patients:
        processor.releases[p].set()
    await asyncio.wait_for(loop, 5)


async def test_without_a_backlog_a_batch_commits_before_the_next_is_fetched():
    """Batches far smaller than the batch size mean no backlog: overlapping them only adds transactions."""
    processor = Processor()
    loop = await run_loop([[message("a")], [message("b")]], processor, batch_size=10)
    await settle()
    assert processor.journal == ["read a"]
    processor.releases["a"].set()
    await settle()
    assert processor.journal == ["read a", "committed a", "read b"]
    processor.releases["b"].set()
    await asyncio.wait_for(loop, 5)


LINGER_S = 0.25


async def run_lingering(
    batches: list[list[SimpleNamespace] | None], *, batch_size: int = 10
) -> list[tuple[int, float]]:
    """Run a lingering consumer through the script, every commit let through; the fetches it made."""
    processor = Processor()
    stop = asyncio.Event()
    subscription = Subscription(batches, stop)
    loop = await run_loop([], processor, batch_size=batch_size, linger_s=LINGER_S, stop=stop, subscription=subscription)
    while not loop.done():
        for release in processor.releases.values():
            release.set()
        await asyncio.sleep(0)
    await loop
    return subscription.requests


async def test_after_a_batch_that_left_nothing_waiting_a_lingering_consumer_gathers_the_next():
    requests = await run_lingering([[message("a")], [message("b"), message("c")]])
    # The second request stays open for the linger (up to a full batch) instead of returning its first message.
    assert requests[:2] == [(10, TOP_UP_WAIT_S), (10, LINGER_S)]


async def test_a_lingering_consumer_does_not_gather_while_the_server_says_more_is_waiting():
    requests = await run_lingering([[message("a", waiting=3)], [message("b")]])
    assert requests[:2] == [(10, TOP_UP_WAIT_S), (10, TOP_UP_WAIT_S)]


async def test_a_lingering_consumer_does_not_gather_after_a_full_batch():
    requests = await run_lingering([[message("a"), message("b")], [message("c")]], batch_size=2)
    assert requests[:2] == [(2, TOP_UP_WAIT_S), (2, TOP_UP_WAIT_S)]


async def test_a_gathering_that_found_nothing_goes_back_to_waiting_for_the_first_message():
    requests = await run_lingering([[message("a")], NOTHING_CAME, [message("b")]])
    assert requests[:3] == [(10, TOP_UP_WAIT_S), (10, LINGER_S), (10, TOP_UP_WAIT_S)]


async def test_a_fetch_that_fails_unexpectedly_is_retried_and_the_loop_goes_on():
    """Regression: only nats-py's own errors were caught; anything else a fetch raised ended the loop for good,
    its group's lease still held, nothing reading the durable again."""
    processor = Processor()
    loop = await run_loop([KeyError("Description"), [message("a")]], processor)  # type: ignore[list-item]
    for _ in range(100):  # the retry waits half a second
        if processor.journal or loop.done():
            break
        await asyncio.sleep(0.05)
    assert processor.journal == ["read a"]
    processor.releases["a"].set()
    await asyncio.wait_for(loop, 5)
    assert processor.journal == ["read a", "committed a"]


async def test_a_pull_loop_that_fails_is_started_again_until_its_group_is_let_go(monkeypatch):
    """Whatever ends a group's pull loop with an error, the runtime starts it again (after a back-off); once the
    group is let go (its stop set), it is not."""
    from mtm.platform.runtime import ServiceRuntime

    stop = asyncio.Event()
    runs: list[str] = []

    async def pull_loop_failing_once(runtime, consumer, durable, stop_event):
        runs.append(durable)
        if len(runs) == 1:
            raise RuntimeError("a bug of the loop's own")
        stop_event.set()

    monkeypatch.setattr("mtm.platform.runtime.pull_loop", pull_loop_failing_once)
    runtime = SimpleNamespace(stopping=asyncio.Event())
    consumer = SimpleNamespace(durable="durable")
    await asyncio.wait_for(ServiceRuntime._pull_while_held(runtime, consumer, "durable", stop), 5)  # type: ignore[arg-type]
    assert runs == ["durable", "durable"]

    runs.clear()
    stop.clear()
    monkeypatch.setattr("mtm.platform.runtime.pull_loop", _failing_and_let_go(stop, runs))
    await asyncio.wait_for(ServiceRuntime._pull_while_held(runtime, consumer, "durable", stop), 5)  # type: ignore[arg-type]
    assert runs == ["durable"]


def _failing_and_let_go(stop: asyncio.Event, runs: list[str]):
    """A pull loop whose group is let go while it fails: it is not started again."""

    async def run(runtime, consumer, durable, stop_event):
        runs.append(durable)
        stop.set()
        raise RuntimeError("failed as the group was let go")

    return run


async def test_an_empty_batch_from_a_fetch_is_nothing_fetched_and_the_loop_goes_on():
    """Regression: nats-py's fetch returns an empty list when its pull request ends with a status before any
    message. A lingering consumer took it as a batch and ended on an IndexError, its lease held: the program's
    consumers stopped under load, their messages pending for ever."""
    requests = await run_lingering([[message("a")], [], [message("b")]])
    assert len(requests) == 4  # "a", the empty one, "b", and the last look that found nothing
