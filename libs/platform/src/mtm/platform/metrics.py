"""Prometheus metrics: one registry per running service (several share a process in tests), served on /metrics.

Labels name things of bounded number (consumers, subjects of commands, outcomes, kinds, channels), never a
patient, a person or an id: no PHI, and a series count that does not grow with the traffic.

Code deep in a service (a drug check, a delivery attempt) reaches its service's registry through `current()`,
bound for the service's tasks like its log lines' `service` field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a millisecond to a minute.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10_000)


class Metrics:
    """A registry and the metrics declared on it, made once by name (declaring twice returns the first)."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._made: dict[str, Any] = {}
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def _get(self, cls: type, name: str, doc: str, labels: Sequence[str], **kw: Any) -> Any:
        found = self._made.get(name)
        if found is None:
            found = self._made[name] = cls(name, doc, tuple(labels), registry=self.registry, **kw)
        return found

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get(Counter, name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = DURATION_BUCKETS
    ) -> Histogram:
        return self._get(Histogram, name, doc, labels, buckets=tuple(buckets))

    def register(self, collector: Any) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# Where nothing is bound (a unit test calling a use case): counted, never served.
_UNBOUND = Metrics(process=False)
_CURRENT: ContextVar[Metrics | None] = ContextVar("mtm_metrics", default=None)


def current() -> Metrics:
    return _CURRENT.get() or _UNBOUND


@contextlib.contextmanager
def metrics_scope(metrics: Metrics) -> Iterator[None]:
    token = _CURRENT.set(metrics)
    try:
        yield
    finally:
        _CURRENT.reset(token)
