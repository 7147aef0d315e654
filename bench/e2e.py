"""Service throughput: discharges to review tasks end to end, and the reconciliation projection on its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench.harness import (
    OTHER_PROCESSES,
    Encoded,
    PhaseFailed,
    Progress,
    ResourceSampler,
    Servers,
    ServiceFleet,
    batch_size,
    jetstream_traffic,
    publish_windowed,
    running_fleet,
)
from mtm.contracts import MedicationsReconciled, ReviewTaskCreated
from mtm.contracts.envelope import EventEnvelope
from mtm.contracts.subjects import event_filter

# How long the count may stand still before the phase is declared stuck.
STALL_S = 30.0


@dataclass
class EventCounter:
    """Counts one event type on the patient log with a core subscription (deduplicated by Nats-Msg-Id)."""

    first_at: float | None = None
    last_at: float | None = None
    seen: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def count(self) -> int:
        return len(self.seen)

    async def subscribe(self, nc: Any, event_cls: type[EventEnvelope]) -> Any:
        async def on_message(msg: Any) -> None:
            self.last_at = time.monotonic()
            if self.first_at is None:
                self.first_at = self.last_at
            self.seen.add((msg.headers or {}).get("Nats-Msg-Id") or msg.reply or str(len(self.seen)))
            self.changed.set()

        # The default pending limits drop messages of a slow subscriber; this one must never lose a count.
        return await nc.subscribe(event_filter(event_cls), cb=on_message, pending_msgs_limit=-1, pending_bytes_limit=-1)

    async def wait_change(self, timeout_s: float) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout=timeout_s)


async def generate_load(
    js: Any, source: Iterator[Encoded], done: EventCounter, max_backlog: int, stop: asyncio.Event, stats: dict[str, int]
) -> None:
    """Publish as fast as the services absorb: windowed confirms, never more than `max_backlog` unfinished."""
    pending: collections.deque[asyncio.Future[Any]] = collections.deque()
    while not stop.is_set():
        if stats["published"] - done.count >= max_backlog:
            await done.wait_change(0.1)
            continue
        subject, body, headers = next(source)
        pending.append(await js.publish_async(subject, body, headers=headers))
        stats["published"] += 1
        while pending and pending[0].done():
            pending.popleft().result()
    await asyncio.gather(*pending)


async def run(
    servers: Servers,
    log_dir: Path,
    source: Iterator[Encoded],
    progress: Progress,
    *,
    warmup_s: float,
    measure_s: float,
    max_backlog: int | None = None,
    phase: str = "e2e",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Review tasks per second with all four services under a bounded backlog, plus their RSS and the CPU split."""
    backlog = max_backlog or 8 * batch_size()
    async with servers.nats(phase) as on_phase:
        fleet = ServiceFleet(on_phase, servers, phase, log_dir, extra_env=dict(extra_env or {}))
        progress("starting services", 0.0)
        started = time.monotonic()
        async with running_fleet(fleet):
            sampler = ResourceSampler(fleet.pids(), servers.server_pids())
            sampler.start()
            nc = await on_phase.nats_client().connect()
            stop = asyncio.Event()
            stats = {"published": 0}
            tasks = EventCounter()
            generator: asyncio.Task[None] | None = None
            try:
                await tasks.subscribe(nc, ReviewTaskCreated)
                generator = asyncio.create_task(generate_load(nc.jetstream(), source, tasks, backlog, stop, stats))
                total_s = warmup_s + measure_s
                await watch(fleet, generator, tasks, warmup_s, lambda t: progress("warm-up", t / total_s))
                sampler.begin_cpu_window()
                traffic_from = await jetstream_traffic(nc.jetstream())
                counted_from, measured_from = tasks.count, time.monotonic()
                windows: list[float] = []
                window_start, window_count = measured_from, counted_from

                def on_tick(elapsed: float) -> None:
                    nonlocal window_start, window_count
                    progress(f"measuring ({tasks.count - counted_from:,} tasks)", (warmup_s + elapsed) / total_s)
                    now = time.monotonic()
                    if now - window_start >= 5.0:
                        windows.append(round((tasks.count - window_count) / (now - window_start), 1))
                        window_start, window_count = now, tasks.count

                await watch(fleet, generator, tasks, measure_s, on_tick)
                measured = tasks.count - counted_from
                elapsed = time.monotonic() - measured_from
                cpu = sampler.cpu_cores_used()
                traffic = (await jetstream_traffic(nc.jetstream())).per(traffic_from, measured)
                sampler.sample_rss()
            finally:
                stop.set()
                await sampler.stop()
                if generator is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(generator, timeout=10)
                await nc.drain()
            progress("done", 1.0)
    rss = {name: round(mb, 1) for name, mb in sampler.max_rss_mb.items()}
    rate = measured / elapsed
    return {
        "e2e_events_per_s": round(rate, 1),
        "e2e_cpu_ms_per_discharge": {
            name: round(cores / rate * 1000, 3) for name, cores in cpu.items() if name != OTHER_PROCESSES and rate
        },
        "e2e_measured_s": round(elapsed, 1),
        "e2e_warmup_s": warmup_s,
        "e2e_review_tasks_measured": measured,
        "e2e_discharges_published": stats["published"],
        "e2e_max_backlog": backlog,
        "e2e_window_rates_per_s": windows,
        "e2e_wall_s": round(time.monotonic() - started, 1),
        "e2e_cpu_cores": cpu,
        "e2e_nats_per_discharge": traffic,
        "service_rss_mb": rss,
        "max_service_rss_mb": max(rss.values()) if rss else float("nan"),
    }


async def watch(
    fleet: ServiceFleet, generator: asyncio.Task[None], counter: EventCounter, seconds: float, tick: Any
) -> None:
    """Let the load run for `seconds`, failing fast when a service dies, the generator fails or nothing moves."""
    started = time.monotonic()
    last_count, last_change = counter.count, started
    while (elapsed := time.monotonic() - started) < seconds:
        fleet.check_alive()
        if generator.done():
            generator.result()
            raise PhaseFailed("the load generator stopped early")
        if counter.count != last_count:
            last_count, last_change = counter.count, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            raise PhaseFailed(f"no review task for {STALL_S:.0f} s; logs: {fleet.log_dir}")
        tick(elapsed)
        await asyncio.sleep(0.25)


async def run_projection(
    servers: Servers, log_dir: Path, messages: list[Encoded], progress: Progress, *, timeout_s: float = 180.0
) -> dict[str, Any]:
    """The reconciliation service alone on discharges pre-published to its intake: per second until every one is
    recorded and reconciled."""
    from mtm.platform.streams import DISCHARGE_INTAKE, PATIENT_EVENTS

    run = await run_alone(
        servers, log_dir, messages, progress, phase="projection", streams=(PATIENT_EVENTS, DISCHARGE_INTAKE),
        counted=MedicationsReconciled, timeout_s=timeout_s,
    )  # fmt: skip
    return {
        "recon_projection_events_per_s": run.rate,
        "recon_projection_events": len(messages),
        "recon_projection_cpu_ms_per_event": run.cpu_ms_per_message,
    }


class AloneRun(NamedTuple):
    rate: float
    # CPU time per message of the service, the servers and the bench process over the measured span: on a shared
    # machine the rate moves with the neighbours' load, the CPU a message costs much less.
    cpu_ms_per_message: dict[str, float]


async def run_alone(
    servers: Servers,
    log_dir: Path,
    messages: list[Encoded],
    progress: Progress,
    *,
    phase: str,
    streams: tuple[Any, ...],
    counted: type[EventEnvelope],
    timeout_s: float = 180.0,
) -> AloneRun:
    """The reconciliation service alone on pre-published messages: per second until as many `counted` events.

    The clock starts when the service logs that it started (its consumers are pulling by then), or at the first
    counted event if that comes first; it stops when the count reaches the total.
    """
    from mtm.platform.streams import declare_stream

    total = len(messages)
    async with servers.nats(phase) as on_phase:
        nc = await on_phase.nats_client().connect()
        try:
            js = nc.jetstream()
            # Declared exactly as their owner, the reconciliation service, declares them.
            for spec in streams:
                await declare_stream(js, spec, replicas=1, duplicate_window_s=600.0)
            await publish_windowed(js, messages, lambda sent: progress("pre-publishing", 0.2 * sent / total))
            seen = EventCounter()
            await seen.subscribe(nc, counted)
            fleet = ServiceFleet(on_phase, servers, phase, log_dir, services=("reconciliation",))
            async with running_fleet(fleet, ready=False):
                first_process = next(iter(fleet.processes))
                started = await fleet.wait_for_log(first_process, "service started")
                started = min(started, seen.first_at or started)
                sampler = ResourceSampler(fleet.pids(), servers.server_pids())
                sampler.begin_cpu_window()
                last_count, last_change = 0, time.monotonic()
                while seen.count < total:
                    fleet.check_alive()
                    if seen.count != last_count:
                        last_count, last_change = seen.count, time.monotonic()
                    elif time.monotonic() - last_change > min(STALL_S, timeout_s):
                        raise PhaseFailed(
                            f"{counted.EVENT_NAME}: {seen.count} of {total}, then nothing for {STALL_S:.0f} s; "
                            f"log: {fleet.log_path(first_process)}"
                        )
                    progress(f"processing ({seen.count:,}/{total:,})", 0.2 + 0.8 * seen.count / total)
                    await seen.wait_change(0.25)
                finished = seen.last_at or time.monotonic()
                cpu_s = sampler.cpu_seconds_used()
        finally:
            await nc.drain()
    progress("done", 1.0)
    return AloneRun(
        round(total / (finished - started), 1), {name: round(s * 1000 / total, 4) for name, s in cpu_s.items()}
    )
