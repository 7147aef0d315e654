"""The rebuild's puller: pull requests answered into one callback subscription, on a real JetStream server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.errors import APIError, ServiceUnavailableError

from mtm.platform.pulling import Puller, puller
from mtm.platform.streams import add_stream

pytestmark = pytest.mark.integration


@pytest.fixture
async def durable(clean_jetstream: Client) -> tuple[str, str]:
    """A stream with a durable pull consumer on it: (stream, subject)."""
    js = clean_jetstream.jetstream()
    name = f"PULL_{uuid.uuid4().hex[:8].upper()}"
    subject = f"pull.{name.lower()}"
    await add_stream(js, StreamConfig(name=name, subjects=[subject]))
    await js.add_consumer(name, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT))
    return name, subject


@pytest.fixture
async def pulls(nc: Client, durable: tuple[str, str]) -> AsyncIterator[Puller]:
    """A puller on the durable, its subscription ended after the test."""
    stream, _ = durable
    found = await puller(nc.jetstream(), stream=stream, durable="reader")
    try:
        yield found
    finally:
        await found.unsubscribe()


async def publish(nc: Client, subject: str, *bodies: str) -> None:
    js = nc.jetstream()
    for body in bodies:
        await js.publish(subject, body.encode())


def bodies(messages: list[Msg]) -> list[str]:
    return [m.data.decode() for m in messages]


async def pull_waiting(pulls: Puller) -> asyncio.Task[list[Msg]]:
    """A pull for one message, given a moment to be open on the server before anything is published."""
    waiting = asyncio.create_task(pulls.pull(1, 30))
    await asyncio.sleep(0.1)
    return waiting


async def published_to(waiting: asyncio.Task[list[Msg]], nc: Client, subject: str, body: str) -> list[str]:
    """Publish `body`, and what the waiting pull took."""
    await publish(nc, subject, body)
    return bodies(await asyncio.wait_for(waiting, 10))


async def test_a_pull_takes_what_is_waiting_up_to_its_limit_and_the_next_one_the_rest_in_order(
    nc: Client, durable: tuple[str, str], pulls: Puller
) -> None:
    _, subject = durable
    await publish(nc, subject, "1", "2", "3", "4", "5")
    first = await pulls.pull(3, None)
    rest = await asyncio.wait_for(pulls.pull(3, None), 10)
    assert bodies(first) == ["1", "2", "3"] and bodies(rest) == ["4", "5"]
    assert [m.metadata.sequence.stream for m in first + rest] == [1, 2, 3, 4, 5]


async def test_a_pull_that_finds_nothing_ends_empty_when_its_wait_is_over(pulls: Puller) -> None:
    assert await pulls.pull(4, None) == []
    assert await asyncio.wait_for(pulls.pull(4, 0.2), 10) == []


async def test_a_waiting_pull_takes_a_message_published_meanwhile(
    nc: Client, durable: tuple[str, str], pulls: Puller
) -> None:
    _, subject = durable
    waiting = await pull_waiting(pulls)
    assert await published_to(waiting, nc, subject, "late") == ["late"]


async def test_the_end_of_an_earlier_pull_does_not_end_the_one_waiting(
    nc: Client, durable: tuple[str, str], pulls: Puller
) -> None:
    _, subject = durable
    waiting = await pull_waiting(pulls)
    # The server's "request timeout" for a pull given up before (its own reply subject), arriving now.
    stale = Msg(nc, subject=f"{pulls._inbox}.0", headers={"Status": "408", "Description": "Request Timeout"})
    await pulls._on_message(stale)
    await asyncio.sleep(0.1)
    assert not waiting.done(), "an earlier pull's end ended the pull waiting now"
    assert await published_to(waiting, nc, subject, "wanted") == ["wanted"]


async def test_a_message_that_came_after_its_pull_was_given_up_is_handed_out_first(
    nc: Client, durable: tuple[str, str], pulls: Puller
) -> None:
    _, subject = durable
    await publish(nc, subject, "next")
    late = Msg(nc, subject=subject, data=b"late", reply="$JS.ACK.x.reader.1.9.9.0.0")
    await pulls._on_message(late)  # no pull outstanding: its pull was given up
    assert bodies(await pulls.pull(5, None)) == ["late"]
    assert bodies(await pulls.pull(5, None)) == ["next"]


async def test_a_nakd_message_is_fetched_again_and_acks_are_kept(
    nc: Client, durable: tuple[str, str], pulls: Puller
) -> None:
    stream, subject = durable
    await publish(nc, subject, "a", "b")
    js = nc.jetstream()
    first, second = await pulls.pull(2, None)
    await first.ack_sync()
    await second.nak()
    (again,) = await pulls.pull(2, 5)
    await again.ack_sync()
    assert (again.data, again.metadata.num_delivered) == (b"b", 2)
    info = await js.consumer_info(stream, "reader")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_pull_for_a_durable_that_is_not_there_raises_what_nats_py_would(
    nc: Client, durable: tuple[str, str]
) -> None:
    stream, _ = durable
    pulls = await puller(nc.jetstream(), stream=stream, durable="missing")
    try:
        with pytest.raises(ServiceUnavailableError):
            await asyncio.wait_for(pulls.pull(1, 1), 10)
    finally:
        await pulls.unsubscribe()


async def test_a_pull_waiting_when_its_durable_is_deleted_is_refused(
    nc: Client, durable: tuple[str, str], pulls: Puller
) -> None:
    stream, _ = durable
    js = nc.jetstream()
    waiting = asyncio.create_task(pulls.pull(1, 30))
    await asyncio.sleep(0.2)
    await js.delete_consumer(stream, "reader")
    with pytest.raises(APIError) as refused:
        await asyncio.wait_for(waiting, 10)
    assert refused.value.code == 409
