"""What a running service tells its operators: /healthz, /readyz and /metrics, from the runtime's own state.

Counters the hot path keeps as plain numbers (messages consumed, acknowledged, nak'd, parked per consumer; events
relayed) are read when Prometheus scrapes; what lives elsewhere (the outbox's depth and age in Postgres, each
durable's pending messages in JetStream) is looked up then, at most once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from nats.js.errors import NotFoundError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from mtm.platform.logging import get_logger
from mtm.platform.metrics import SIZE_BUCKETS, Metrics
from mtm.platform.probes import ProbeServer

if TYPE_CHECKING:
    from mtm.platform.runtime import ServiceRuntime

log = get_logger(__name__)

OUTBOX_STATE = """
SELECT (SELECT count(*) FROM public.outbox) AS depth,
       (SELECT extract(epoch FROM now() - min(created_at)) FROM public.outbox) AS oldest_s,
       (SELECT count(*) FROM public.outbox_parked) AS parked
"""
REFRESH_EVERY_S = 1.0
LOOKUP_TIMEOUT_S = 2.0
PING_TIMEOUT_S = 1.0

# (metric name without _total, help, attribute of the batch processor)
CONSUMER_COUNTERS = (
    ("mtm_messages_consumed", "Messages fetched and handled by the consumer.", "consumed"),
    ("mtm_messages_acked", "Messages acknowledged (applied, skipped as seen before, parked or erased).", "acked"),
    ("mtm_messages_nakd", "Messages nak'd for redelivery after failing.", "naked"),
    ("mtm_messages_dead_lettered", "Messages parked on the service's dead-letter stream.", "parked"),
    ("mtm_messages_applied", "Messages that changed the projection (the rest were seen before).", "applied"),
    ("mtm_messages_skipped_erased", "Messages of erased patients, skipped.", "skipped_erased"),
    ("mtm_consumer_outages_waited", "Infrastructure failures waited out with the batch in hand.", "waited_out"),
)


class ServiceTelemetry:
    """The registry of one running service, its collectors, and its probe server."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime
        self.metrics = Metrics()
        self.metrics.register(_RuntimeCollector(self))
        self.batch_size = self.metrics.histogram(
            "mtm_batch_size", "Messages per fetched batch.", ("consumer",), buckets=SIZE_BUCKETS
        )
        self.batch_seconds = self.metrics.histogram(
            "mtm_batch_duration_seconds", "Time to handle a batch: read, apply in one transaction, ack.", ("consumer",)
        )
        self.requests = self.metrics.counter(
            "mtm_requests",
            "Commands, queries and admin requests answered, by subject and outcome.",
            ("subject", "outcome"),
        )
        self.request_seconds = self.metrics.histogram(
            "mtm_request_duration_seconds", "Time to answer a request.", ("subject",)
        )
        self.probes: ProbeServer | None = None
        self.outbox: tuple[float, float, float] | None = None
        self.pending: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.lookup_errors = 0
        self._refreshed = 0.0

    def observe_batch(self, consumer: str) -> Callable[[int, float], None]:
        size, seconds = self.batch_size.labels(consumer), self.batch_seconds.labels(consumer)

        def observe(count: int, took_s: float) -> None:
            size.observe(count)
            seconds.observe(took_s)

        return observe

    def answered(self, subject: str, outcome: str, took_s: float) -> None:
        self.requests.labels(subject, outcome).inc()
        self.request_seconds.labels(subject).observe(took_s)

    # --- the HTTP server -----------------------------------------------------------------------------------

    async def start_probes(self, host: str, port: int) -> None:
        self.probes = ProbeServer(host=host, port=port, ready=self.ready, metrics=self.render)
        await self.probes.start()

    async def stop_probes(self) -> None:
        if self.probes is not None:
            await self.probes.stop()

    @property
    def address(self) -> str | None:
        return self.probes.address if self.probes is not None and self.probes.port is not None else None

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        """Ready as the status subject says (consumers pulling, tasks healthy, NATS connected), and Postgres answers."""
        runtime = self.runtime
        reasons, pulling = runtime.readiness()
        found = list(reasons)
        if runtime.pool is not None and runtime.serving:
            try:
                async with asyncio.timeout(PING_TIMEOUT_S), runtime.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
            except Exception as exc:
                found.append(f"postgres: not answering ({type(exc).__name__})")
        return not found, {"service": runtime.name, "reasons": found, "consumers": list(pulling)}

    async def render(self) -> bytes:
        await self._refresh()
        return self.metrics.render()

    async def _refresh(self) -> None:
        """The outbox's depth and age, and each durable's pending counts, at most once a second."""
        now = time.monotonic()
        runtime = self.runtime
        if now - self._refreshed < REFRESH_EVERY_S or runtime.pool is None or runtime.js is None:
            return
        self._refreshed = now
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                async with runtime.pool.acquire() as conn:
                    row = await conn.fetchrow(OUTBOX_STATE)
                self.outbox = (float(row["depth"]), float(row["oldest_s"] or 0.0), float(row["parked"]))
                pending = {}
                for consumer in runtime.consumers:
                    for key in runtime.group_keys:
                        if key.consumer != consumer.durable:
                            continue
                        durable = runtime.durable_of(key)
                        try:
                            info = await runtime.jetstream.consumer_info(consumer.stream, durable)
                        except NotFoundError:
                            if consumer.retiring:
                                continue  # drained and deleted by another replica
                            raise
                        pending[(consumer.durable, durable)] = (
                            int(info.num_pending or 0),
                            int(info.num_ack_pending or 0),
                            int(info.num_redelivered or 0),
                        )
                self.pending = pending
        except Exception as exc:
            self.lookup_errors += 1
            log.warning("metrics lookup failed", error_type=type(exc).__name__)


class _RuntimeCollector:
    """Reads the runtime's numbers when scraped (nothing is counted twice in the hot path)."""

    def __init__(self, telemetry: ServiceTelemetry) -> None:
        self._telemetry = telemetry

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        telemetry = self._telemetry
        runtime = telemetry.runtime
        for name, doc, attribute in CONSUMER_COUNTERS:
            family = CounterMetricFamily(name, doc, labels=("consumer",))
            for durable, processor in runtime.processors.items():
                family.add_metric((durable,), getattr(processor, attribute))
            yield family
        relayed = CounterMetricFamily("mtm_outbox_published", "Events the outbox relay published (confirmed).")
        relayed.add_metric((), runtime.relay.published if runtime.relay is not None else 0)
        yield relayed
        if telemetry.outbox is not None:
            depth, oldest_s, parked = telemetry.outbox
            yield GaugeMetricFamily("mtm_outbox_depth", "Events in the outbox, not yet confirmed by the log.", depth)
            yield GaugeMetricFamily(
                "mtm_outbox_lag_seconds", "Age of the oldest event in the outbox (0: empty): the relay's lag.", oldest_s
            )
            yield GaugeMetricFamily("mtm_outbox_parked", "Outbox rows set aside as too large for the log.", parked)
        for index, (name, doc) in enumerate(
            (
                ("mtm_consumer_pending_messages", "Messages the durable has not delivered yet (JetStream)."),
                ("mtm_consumer_ack_pending_messages", "Messages delivered and not acknowledged yet (JetStream)."),
                ("mtm_consumer_redelivered_messages", "Messages delivered more than once, unacknowledged (JetStream)."),
            )
        ):
            family = GaugeMetricFamily(name, doc, labels=("consumer", "durable"))
            for (consumer, durable), values in telemetry.pending.items():
                family.add_metric((consumer, durable), values[index])
            yield family
        errors = CounterMetricFamily("mtm_metrics_lookup_errors", "Failed lookups of outbox or JetStream numbers.")
        errors.add_metric((), telemetry.lookup_errors)
        yield errors
        reasons, _ = runtime.readiness()
        yield GaugeMetricFamily("mtm_ready", "1 when the service is ready (as /readyz).", 0.0 if reasons else 1.0)
        restarts = CounterMetricFamily(
            "mtm_task_restarts", "Restarts of supervised background tasks.", labels=("task",)
        )
        tasks = [*runtime.task_health, *([runtime.relay.health] if runtime.relay is not None else [])]
        for health in tasks:
            restarts.add_metric((health.name,), health.restarts)
        yield restarts
