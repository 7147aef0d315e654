"""JetStream's own counts of what a bench phase stored and delivered, read from a real server."""

from __future__ import annotations

import uuid

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bench.harness import jetstream_traffic

pytestmark = pytest.mark.integration


async def test_traffic_counts_every_stored_message_and_every_delivery_redeliveries_included(nc: Client) -> None:
    js = nc.jetstream()
    name = f"BENCH_TRAFFIC_{uuid.uuid4().hex[:8].upper()}"
    subject = f"bench.traffic.{name.lower()}"
    before = await jetstream_traffic(js)
    await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    try:
        for n in range(3):
            await js.publish(subject, f"{n}".encode())
        await js.add_consumer(name, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT))
        sub = await js.pull_subscribe_bind("reader", name)
        first, second = await sub.fetch(2, timeout=5)
        await first.ack()
        await second.nak()
        # The third message, and the nak'd one delivered a second time (a fetch may bring them one at a time).
        rest = []
        while len(rest) < 2:
            rest += await sub.fetch(2 - len(rest), timeout=5)
        assert sorted(m.metadata.num_delivered for m in rest) == [1, 2]

        counted = (await jetstream_traffic(js)).per(before, 1)
    finally:
        await js.delete_stream(name)

    assert counted == {
        "stored": 3.0,
        "delivered": 4.0,
        "stored_by_stream": {name: 3.0},
        "delivered_by_consumer": {f"{name}/reader": 4.0},
    }
