"""Latency at a fixed offered rate: a discharge published to its ReviewTaskCreated at a subscribed pharmacist tool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

from bench.harness import Encoded, PhaseFailed, Progress, Servers, ServiceFleet, paced, percentile, running_fleet
from mtm.contracts import MedicationsReconciled, ReviewTaskCreated
from mtm.contracts.subjects import event_filter

RATE_PER_S = 500.0
# The same path at a fifth of that load: what the serial path costs a discharge when little queues behind it.
LIGHT_RATE_PER_S = 100.0
CORRELATION_ID = re.compile(rb'"correlation_id":"([0-9a-f-]{36})"')


def correlation_of(body: bytes) -> str:
    """The event's correlation id, without parsing the whole (several KB) event in the harness."""
    found = CORRELATION_ID.search(body)
    return found.group(1).decode() if found else str(json.loads(body)["correlation_id"])


async def run(
    servers: Servers,
    log_dir: Path,
    messages: list[Encoded],
    progress: Progress,
    *,
    rate_per_s: float = RATE_PER_S,
    warmup_s: float = 2.0,
    offered_s: float = 10.0,
    drain_s: float = 15.0,
    phase: str = "latency",
) -> dict[str, Any]:
    """p50/p95/p99 from the scheduled send time (so a late generator cannot hide queueing) to receipt.

    Discharges are matched to review tasks by correlation id (the discharge's event id). The first `warmup_s`
    of the schedule is sent but not counted. Figures of a rate other than `RATE_PER_S` are named for their rate
    (`at_rate`); `phase` names the run's servers and databases, so a second run starts from nothing too.
    """
    warmup = int(rate_per_s * warmup_s)
    count = warmup + int(rate_per_s * offered_s)
    if len(messages) < count:
        raise ValueError(f"latency needs {count} discharges, got {len(messages)}")
    messages = messages[:count]
    correlation_ids = [correlation_of(body) for _, body, _ in messages]
    measured_ids = set(correlation_ids[warmup:])
    sent_at: dict[str, float] = {}
    latencies_ms: dict[str, float] = {}
    reconciled_ms: dict[str, float] = {}
    all_received = asyncio.Event()

    async def on_reconciled(msg: Any) -> None:
        received = time.monotonic()
        correlation_id = correlation_of(msg.data)
        sent = sent_at.get(correlation_id)
        if sent is not None:
            reconciled_ms.setdefault(correlation_id, (received - sent) * 1000)

    async def on_review_task(msg: Any) -> None:
        received = time.monotonic()
        correlation_id = correlation_of(msg.data)
        sent = sent_at.get(correlation_id)
        if sent is not None and correlation_id not in latencies_ms:
            latencies_ms[correlation_id] = (received - sent) * 1000
            if len(latencies_ms) == count:
                all_received.set()

    async with servers.nats(phase) as infrastructure:
        fleet = ServiceFleet(infrastructure, servers, phase, log_dir)
        progress("starting services", 0.0)
        async with running_fleet(fleet):
            nc = await infrastructure.nats_client().connect()
            try:
                subscriptions = ((MedicationsReconciled, on_reconciled), (ReviewTaskCreated, on_review_task))
                for event_cls, callback in subscriptions:
                    await nc.subscribe(
                        event_filter(event_cls), cb=callback, pending_msgs_limit=-1, pending_bytes_limit=-1
                    )
                js = nc.jetstream()
                confirms = []
                max_lag_s = 0.0
                async for index, due in paced(rate_per_s, count):
                    subject, body, headers = messages[index]
                    sent_at[correlation_ids[index]] = due
                    confirms.append(await js.publish_async(subject, body, headers=headers))
                    max_lag_s = max(max_lag_s, time.monotonic() - due)
                    if index % 250 == 0:
                        fleet.check_alive()
                        label = "warm-up" if index < warmup else f"offering {rate_per_s:.0f}/s"
                        progress(label, 0.8 * index / count)
                await asyncio.gather(*confirms)
                progress("waiting for the last review tasks", 0.8)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_received.wait(), timeout=drain_s)
            finally:
                await nc.drain()
    received = [latencies_ms[c] for c in measured_ids if c in latencies_ms]
    # A task that never came is slower than any that did: it counts, as infinitely late.
    measured = received + [float("inf")] * (len(measured_ids) - len(received))
    if not received:
        raise PhaseFailed(f"no review task arrived at {rate_per_s:.0f}/s; logs: {log_dir}")
    first_hop = [reconciled_ms[c] for c in measured_ids if c in reconciled_ms]
    second_hop = [latencies_ms[c] - reconciled_ms[c] for c in measured_ids if c in latencies_ms and c in reconciled_ms]
    progress("done", 1.0)
    return at_rate(
        rate_per_s,
        {
            "latency_to_reconciled_p50_ms": round(percentile(first_hop, 0.50), 1),
            "latency_to_reconciled_p99_ms": round(percentile(first_hop, 0.99), 1),
            "latency_reconciled_to_task_p50_ms": round(percentile(second_hop, 0.50), 1),
            "latency_reconciled_to_task_p99_ms": round(percentile(second_hop, 0.99), 1),
            "p50_latency_ms_at_500": round(percentile(measured, 0.50), 1),
            "p95_latency_ms_at_500": round(percentile(measured, 0.95), 1),
            "p99_latency_ms_at_500": round(percentile(measured, 0.99), 1),
            "max_latency_ms_at_500": round(max(measured), 1),
            "latency_offered_per_s": rate_per_s,
            "latency_offered_s": offered_s,
            "latency_measured": len(received),
            "latency_missing": len(measured_ids) - len(received),
            "latency_generator_max_lag_ms": round(max_lag_s * 1000, 1),
        },
    )


def at_rate(rate_per_s: float, figures: dict[str, Any]) -> dict[str, Any]:
    """The figures as named at `RATE_PER_S` (`p99_latency_ms_at_500`, `latency_missing`), renamed for another rate
    (`p99_latency_ms_at_100`, `latency_missing_at_100`)."""
    if rate_per_s == RATE_PER_S:
        return figures
    at = f"_at_{rate_per_s:g}"
    return {(key.replace("_at_500", at) if "_at_500" in key else key + at): value for key, value in figures.items()}
