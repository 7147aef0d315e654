"""Raw NATS JetStream and asyncpg limits with no mtm code, on discharge-sized payloads, for the ratio column."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench.harness import Encoded, Progress, batch_size, paced, percentile, publish_windowed
from mtm.platform.connection import NatsClient

RAW_STREAM = "BENCH_RAW"
RAW_PREFIX = "bench.raw"
HOP_STREAM = "BENCH_HOP"
HOP_PREFIX = "bench.hop"
DUPLICATE_WINDOW_S = 600.0  # the patient log's default, so the server does the same dedup bookkeeping
HOP_RATE_PER_S = 500.0
STEPS = 9  # sub-measurements, for the progress fraction

CREATE_TABLE = "CREATE TABLE {table} (event_id uuid PRIMARY KEY, patient_id text NOT NULL, body jsonb NOT NULL)"
INSERT_ROW = "INSERT INTO {table} (event_id, patient_id, body) VALUES ($1, $2, $3)"
INSERT_UNNEST = (
    "INSERT INTO {table} (event_id, patient_id, body) SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])"
)

Row = tuple[uuid.UUID, str, str]


def stream_config(name: str, prefix: str) -> StreamConfig:
    """Configured like the patient log: file storage, limits retention, dedup window."""
    return StreamConfig(
        name=name,
        subjects=[f"{prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_S,
    )


def pull_consumer(durable: str, ack_policy: AckPolicy = AckPolicy.EXPLICIT) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=ack_policy,
        ack_wait=30,
        max_ack_pending=batch_size() * 4,
    )


def raw_messages(payloads: list[Encoded], prefix: str) -> Any:
    """Discharge bodies and subjects under the bench prefix, each with a unique Nats-Msg-Id."""
    for n, (subject, body, _headers) in enumerate(itertools.cycle(payloads)):
        yield f"{prefix}.{subject}", body, {"Nats-Msg-Id": f"{prefix}-{n}"}


async def run(
    nats_client: NatsClient,
    database_url: str,
    payloads: list[Encoded],
    progress: Progress,
    *,
    seconds_each: float = 2.5,
    hop_seconds: float = 5.0,
) -> dict[str, float]:
    """Every raw limit; `payloads` are encoded discharges (their sizes and subjects are reused)."""
    results: dict[str, float] = {"raw_payload_bytes_mean": sum(len(b) for _, b, _ in payloads) / len(payloads)}
    step = 0

    def sub_progress(label: str) -> Callable[[float], None]:
        base = step

        def report(fraction: float) -> None:
            progress(label, (base + min(1.0, fraction)) / STEPS)

        return report

    nc = await nats_client.connect()
    try:
        js = nc.jetstream()
        for name in (RAW_STREAM, HOP_STREAM):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)  # left by an interrupted run
        await js.add_stream(stream_config(RAW_STREAM, RAW_PREFIX))
        messages = raw_messages(payloads, RAW_PREFIX)
        results["raw_publish_sync_per_s"] = await publish_awaited(js, messages, seconds_each, sub_progress("publish"))
        step += 1
        results["raw_publish_per_s"] = await publish_async_windowed(
            js, messages, seconds_each, sub_progress("publish_async")
        )
        step += 1
        results["raw_consume_ack_per_s"] = await fetch_and_ack(nc, js, seconds_each * 2, sub_progress("fetch + ack"))
        step += 1
        results["raw_consume_ack_all_per_s"] = await fetch_and_ack(
            nc, js, seconds_each * 2, sub_progress("fetch + one ack per batch"), ack_all=True
        )
        step += 1
        await js.add_stream(stream_config(HOP_STREAM, HOP_PREFIX))
        hop = await jetstream_hop_latency(nc, js, payloads, hop_seconds, sub_progress("JetStream hop at 500/s"))
        results.update(hop)
        step += 1
    finally:
        for name in (RAW_STREAM, HOP_STREAM):
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        await nc.drain()

    rows = [(subject.split(".")[2], body.decode()) for subject, body, _ in payloads]
    conn = await asyncpg.connect(database_url)
    try:
        for key, label, method in (
            ("raw_tx_per_row_per_s", "one transaction per row", insert_one_per_transaction),
            ("raw_executemany_rows_per_s", "executemany batches", insert_executemany),
            ("raw_unnest_rows_per_s", "unnest batches", insert_unnest),
            ("raw_copy_rows_per_s", "COPY batches", insert_copy),
        ):
            table = key.removeprefix("raw_").removesuffix("_per_s")
            await conn.execute(CREATE_TABLE.format(table=table))
            results[key] = await timed_inserts(conn, table, rows, method, seconds_each, sub_progress(label))
            step += 1
    finally:
        await conn.close()
    results["raw_batch_insert_rows_per_s"] = max(
        results["raw_executemany_rows_per_s"], results["raw_unnest_rows_per_s"]
    )
    progress("done", 1.0)
    return {key: round(value, 2) for key, value in results.items()}


async def publish_awaited(js: Any, messages: Any, seconds: float, progress: Callable[[float], None]) -> float:
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        subject, body, headers = next(messages)
        await js.publish(subject, body, headers=headers)
        sent += 1
        if sent % 200 == 0:
            progress((time.monotonic() - started) / seconds)
    return sent / (time.monotonic() - started)


async def publish_async_windowed(js: Any, messages: Any, seconds: float, progress: Callable[[float], None]) -> float:
    """Publish for `seconds`; the time includes waiting for the last confirm."""
    started = time.monotonic()
    deadline = started + seconds

    def until_deadline() -> Any:
        while time.monotonic() < deadline:
            yield next(messages)

    sent = await publish_windowed(js, until_deadline(), lambda _: progress((time.monotonic() - started) / seconds))
    return sent / (time.monotonic() - started)


async def fetch_and_ack(
    nc: Any, js: Any, seconds: float, progress: Callable[[float], None], *, ack_all: bool = False
) -> float:
    """Drain the raw stream through a durable pull consumer, acking each message as mtm does; or, `ack_all`, with
    `AckPolicy.ALL` and one ack per batch (its last message), what acknowledging in delivery order would allow."""
    total = (await js.stream_info(RAW_STREAM)).state.messages
    durable = "bench-raw-ack-all" if ack_all else "bench-raw"
    await js.add_consumer(RAW_STREAM, pull_consumer(durable, AckPolicy.ALL if ack_all else AckPolicy.EXPLICIT))
    subscription = await js.pull_subscribe_bind(durable=durable, stream=RAW_STREAM)
    received = 0
    started = time.monotonic()
    deadline = started + seconds
    while received < total and time.monotonic() < deadline:
        try:
            batch = await subscription.fetch(batch=batch_size(), timeout=1.0)
        except TimeoutError:
            continue
        for msg in batch[-1:] if ack_all else batch:
            await msg.ack()
        received += len(batch)
        progress(received / total)
    await nc.flush()
    elapsed = time.monotonic() - started
    await subscription.unsubscribe()
    return received / elapsed


async def jetstream_hop_latency(
    nc: Any, js: Any, payloads: list[Encoded], seconds: float, progress: Callable[[float], None]
) -> dict[str, float]:
    """Publish → stream → pull consumer fetch at 500 msgs/s: the floor under one mtm hop (no database)."""
    await js.add_consumer(HOP_STREAM, pull_consumer("bench-hop"))
    subscription = await js.pull_subscribe_bind(durable="bench-hop", stream=HOP_STREAM)
    count = max(1, int(HOP_RATE_PER_S * seconds))
    sent_at: dict[str, float] = {}
    latencies_ms: list[float] = []
    publishing_done = asyncio.Event()

    async def consume() -> None:
        while len(latencies_ms) < count:
            try:
                batch = await subscription.fetch(batch=batch_size(), timeout=1.0)
            except TimeoutError:
                if publishing_done.is_set():
                    return
                continue
            now = time.monotonic()
            for msg in batch:
                sent = sent_at.get(msg.headers["Nats-Msg-Id"])  # type: ignore[index]
                if sent is not None:
                    latencies_ms.append((now - sent) * 1000)
                await msg.ack()

    consumer = asyncio.create_task(consume())
    messages = raw_messages(payloads, HOP_PREFIX)
    confirms = []
    async for index, due in paced(HOP_RATE_PER_S, count):
        subject, body, headers = next(messages)
        sent_at[headers["Nats-Msg-Id"]] = due
        confirms.append(await js.publish_async(subject, body, headers=headers))
        if index % 100 == 0:
            progress(index / count)
    await asyncio.gather(*confirms)
    publishing_done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(consumer, timeout=10)
    await subscription.unsubscribe()
    return {
        "raw_hop_p50_ms_at_500": round(percentile(latencies_ms, 0.50), 3),
        "raw_hop_p99_ms_at_500": round(percentile(latencies_ms, 0.99), 3),
    }


InsertBatch = Callable[[asyncpg.Connection, str, list[Row]], Awaitable[None]]


async def timed_inserts(
    conn: asyncpg.Connection,
    table: str,
    rows: list[tuple[str, str]],
    method: InsertBatch,
    seconds: float,
    progress: Callable[[float], None],
) -> float:
    """Rows/s inserting fresh-keyed discharge rows for `seconds`, one batch (MTM_BATCH_SIZE rows) per transaction."""
    source = itertools.cycle(rows)
    inserted = 0
    size = 1 if method is insert_one_per_transaction else batch_size()
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        batch = [(uuid.uuid4(), patient, body) for patient, body in itertools.islice(source, size)]
        await method(conn, table, batch)
        inserted += len(batch)
        progress((time.monotonic() - started) / seconds)
    return inserted / (time.monotonic() - started)


async def insert_one_per_transaction(conn: asyncpg.Connection, table: str, batch: list[Row]) -> None:
    for row in batch:
        async with conn.transaction():
            await conn.execute(INSERT_ROW.format(table=table), *row)


async def insert_executemany(conn: asyncpg.Connection, table: str, batch: list[Row]) -> None:
    async with conn.transaction():
        await conn.executemany(INSERT_ROW.format(table=table), batch)


async def insert_unnest(conn: asyncpg.Connection, table: str, batch: list[Row]) -> None:
    async with conn.transaction():
        await conn.execute(INSERT_UNNEST.format(table=table), *map(list, zip(*batch, strict=True)))


async def insert_copy(conn: asyncpg.Connection, table: str, batch: list[Row]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table(table, records=batch, columns=["event_id", "patient_id", "body"])
