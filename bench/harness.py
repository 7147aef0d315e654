"""Benchmark plumbing: fresh servers per phase, the services as OS processes, resource sampling, pacing."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from mtm.devstack import processes
from mtm.devstack.embedded import EmbeddedNats, EmbeddedPostgres
from mtm.devstack.infra import Infrastructure
from mtm.devstack.security import LocalSecurity
from mtm.platform.connection import NatsClient
from mtm.platform.settings import with_database

SERVICES = ("reconciliation", "review", "referral", "notify", "program")
# Knobs a service reads that change its speed; the bench passes none of its own, only what the caller exported.
TUNING_ENV = (
    "MTM_BATCH_SIZE",
    "MTM_FETCH_TIMEOUT_S",
    "MTM_OUTBOX_POLL_S",
    "MTM_POOL_MIN_SIZE",
    "MTM_POOL_MAX_SIZE",
    "MTM_ACK_WAIT_S",
    "MTM_MAX_DELIVER",
    "MTM_CONSUMER_GROUPS",
    "MTM_REPLICAS",
    "MTM_LOG_LEVEL",
    "MTM_LOG_FORMAT",
)
DEFAULT_BATCH_SIZE = 256
STOP_GRACE_S = 20.0

Progress = Callable[[str, float], None]


class PhaseFailed(RuntimeError):
    """A phase could not produce its figure; the message says why and where the logs are."""


def tuning_env() -> dict[str, str]:
    return {name: os.environ[name] for name in TUNING_ENV if name in os.environ}


def batch_size() -> int:
    return int(os.environ.get("MTM_BATCH_SIZE", DEFAULT_BATCH_SIZE))


# --- servers --------------------------------------------------------------------------------------------------


@dataclass
class Servers:
    """The run's NATS and Postgres: the environment's when `MTM_NATS_URL`/`MTM_DATABASE_URL` are set, else embedded.

    Embedded servers are the secured stack `mtm up` runs (TLS, a NATS user per service, a Postgres role per
    service): the services under test connect as themselves, the load generator and the comparisons as the
    admin. Each phase gets a fresh NATS (a new embedded server, or the external one with mtm and bench streams
    deleted) and fresh database names, so one phase's backlog never slows the next.
    """

    work_dir: Path
    external_nats: str | None = field(default_factory=lambda: os.environ.get("MTM_NATS_URL"))
    external_database: str | None = field(default_factory=lambda: os.environ.get("MTM_DATABASE_URL"))
    postgres: EmbeddedPostgres | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    nats_servers: list[EmbeddedNats] = field(default_factory=list)
    created_databases: list[str] = field(default_factory=list)

    @functools.cached_property
    def security(self) -> LocalSecurity:
        return LocalSecurity(self.work_dir / "security")

    @property
    def origin(self) -> dict[str, str]:
        return {
            "nats": "environment" if self.external_nats else "embedded (fresh server per phase; TLS, a user each)",
            "postgres": "environment" if self.external_database else "embedded (TLS, a role per service)",
        }

    def start(self) -> Servers:
        if not self.external_database:
            self.postgres = EmbeddedPostgres(self.work_dir / "postgres", self.security).start()
        return self

    @property
    def database_url(self) -> str:
        """The admin's URL: for creating and dropping the bench's databases, never for a service.

        The embedded Postgres is reached on its Unix socket, by the services too: its TLS is a Python front of
        the dev stack (its wheel has no OpenSSL), whose cost is not mtm's and not production's.
        """
        if self.external_database:
            return self.external_database
        assert self.postgres is not None, "servers not started"
        return self.postgres.admin_url(tls=False)

    def database_name(self, phase: str, purpose: str) -> str:
        name = f"bench_{self.run_id}_{phase}_{purpose}"
        self.created_databases.append(name)
        return name

    def database(self, phase: str, purpose: str) -> str:
        """URL of a database name no earlier phase used (services create it at start)."""
        return with_database(self.database_url, self.database_name(phase, purpose))

    def _phase(self, nats_url: str, server: EmbeddedNats | None) -> Infrastructure:
        return Infrastructure(
            nats_url=nats_url,
            database_url=self.database_url,
            nats_origin="embedded" if server else "environment",
            database_origin="embedded" if self.postgres else "environment",
            security=self.security if server or self.postgres else None,
            nats_server=server,
            postgres=self.postgres,
            postgres_tls=False,
        )

    @contextlib.asynccontextmanager
    async def nats(self, phase: str) -> AsyncIterator[Infrastructure]:
        """The phase's servers; `.nats_client()` connects as the admin, `.service_env()` sets a service up."""
        if self.external_nats:
            servers = self._phase(self.external_nats, None)
            await delete_streams(servers.nats_client())
            try:
                yield servers
            finally:
                with contextlib.suppress(Exception):
                    await delete_streams(servers.nats_client())
            return
        server = EmbeddedNats(self.work_dir / f"nats-{phase}", self.security)
        self.nats_servers.append(server)
        server.start()
        try:
            yield self._phase(server.url, server)
        finally:
            server.stop()

    def server_pids(self) -> dict[str, list[int]]:
        """Process ids of the embedded servers that are up and of this process (the load generator), for CPU."""
        pids: dict[str, list[int]] = {"bench (load generator)": [os.getpid()]}
        running = [s for s in self.nats_servers if s.process is not None and s.process.poll() is None]
        if running:
            pids["nats-server"] = [running[-1].process.pid]  # type: ignore[union-attr]
        if self.postgres is not None:
            pid_file = self.postgres.pgdata / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids["postgres"] = [int(pid_file.read_text().splitlines()[0])]
            front = processes.read(self.postgres.tls_front_pid_file)
            if front is not None:  # the embedded Postgres's TLS front: its work is the server's
                pids.setdefault("postgres", []).append(front.pid)
        return pids

    async def drop_databases(self) -> None:
        """Only for external servers: embedded ones go away with the temp dir."""
        if not self.external_database or not self.created_databases:
            return
        conn = await asyncpg.connect(with_database(self.database_url, "postgres"))
        try:
            for name in self.created_databases:
                with contextlib.suppress(asyncpg.PostgresError):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def stop(self) -> None:
        for server in self.nats_servers:
            with contextlib.suppress(Exception):
                server.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()


async def create_database(url: str) -> str:
    """Create the database `url` names (fresh per phase) and return the URL."""
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url


async def delete_streams(client: NatsClient) -> None:
    """Fresh stream state on a shared NATS: drop every mtm and bench stream (their durables go with them)."""
    nc = await client.connect()
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            if name in MTM_STREAMS or name.startswith(("DEAD_LETTERS_", "BENCH_", "OBJ_")):
                await js.delete_stream(name)
    finally:
        await nc.drain()


@dataclass(frozen=True)
class Traffic:
    """JetStream's own counts of the messages it stored (by stream) and delivered (by consumer)."""

    stored: Mapping[str, int]
    delivered: Mapping[str, int]

    def per(self, earlier: Traffic, units: int) -> dict[str, Any]:
        """Stored and delivered per unit of work since `earlier`, in all and by stream and consumer."""
        if units <= 0:
            return {}

        def by_name(now: Mapping[str, int], then: Mapping[str, int]) -> dict[str, float]:
            moved = {name: (count - then.get(name, 0)) / units for name, count in sorted(now.items())}
            return {name: round(per_unit, 2) for name, per_unit in moved.items() if per_unit}

        return {
            "stored": round((sum(self.stored.values()) - sum(earlier.stored.values())) / units, 2),
            "delivered": round((sum(self.delivered.values()) - sum(earlier.delivered.values())) / units, 2),
            "stored_by_stream": by_name(self.stored, earlier.stored),
            "delivered_by_consumer": by_name(self.delivered, earlier.delivered),
        }


NO_TRAFFIC = Traffic(stored={}, delivered={})


async def jetstream_traffic(js: Any) -> Traffic:
    """Every message stored in a stream (its last sequence: the phase's streams are fresh) and every delivery to a
    consumer, redeliveries included; core NATS requests (keys, commands) are not counted."""
    stored: dict[str, int] = {}
    delivered: dict[str, int] = {}
    for stream in await js.streams_info():
        stored[stream.config.name] = int(stream.state.last_seq or 0)
        for consumer in await js.consumers_info(stream.config.name):
            name = f"{stream.config.name}/{consumer.name}"
            delivered[name] = int(consumer.delivered.consumer_seq or 0) if consumer.delivered else 0
    return Traffic(stored, delivered)


MTM_STREAMS = frozenset({"PATIENT_EVENTS", "DISCHARGE_INTAKE", "FILL_INTAKE", "PHYSICIAN_INBOX"})


BENCH_KEK = base64.b64encode(os.urandom(32)).decode()


# --- service processes ----------------------------------------------------------------------------------------


@dataclass
class ServiceFleet:
    """Services as `python -m mtm.<service>` processes, tuned as the stack runs them, each with a fresh database
    and, on the embedded servers, its own NATS user and Postgres role."""

    servers_of_phase: Infrastructure
    servers: Servers
    phase: str
    log_dir: Path
    services: tuple[str, ...] = SERVICES
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)

    service_envs: dict[str, dict[str, str]] = field(default_factory=dict)

    def env(self, service: str) -> dict[str, str]:
        """The process's environment: its own NATS user and a fresh database as its own role (embedded servers)."""
        if service not in self.service_envs:
            database = self.servers.database_name(self.phase, service)
            self.service_envs[service] = self.servers_of_phase.service_env(service, database)
        env = {**os.environ, **self.service_envs[service], **self.extra_env}
        if service == "reconciliation":
            # It keeps the patients' event keys, wrapped with this (events are sealed as in production).
            env["MTM_KEY_ENCRYPTION_KEY"] = BENCH_KEK
        return env

    def database_url(self, service: str) -> str:
        return self.env(service)[f"MTM_{service.upper()}_DATABASE_URL"]

    @property
    def replicas(self) -> int:
        """Processes per service: the phase's own setting (the scale-out steps) over the shell's.

        Each process must be started: one process told `MTM_REPLICAS=4` holds only its own groups, and the other
        groups' partitions wait for a takeover (`takeover_after_s`), which made more replicas look slower.
        """
        return int({**os.environ, **self.extra_env}.get("MTM_REPLICAS", "1"))

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{self.phase}-{name}.log"

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            env = self.env(service)
            for index in range(self.replicas):
                name = service if self.replicas == 1 else f"{service}-{index}"
                with open(self.log_path(name), "ab") as log:
                    self.processes[name] = subprocess.Popen(
                        [sys.executable, "-m", f"mtm.{service}"],
                        env={**env, "MTM_REPLICA_INDEX": str(index)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise PhaseFailed(
                    f"{name} exited with code {process.returncode} during {self.phase}; log: {self.log_path(name)}"
                )

    async def wait_until_ready(self, *, timeout_s: float = 90.0) -> None:
        from mtm.contracts.admin import SERVICES as ALL_SERVICES
        from mtm.platform.status import wait_until_ready

        # The services this fleet runs (the web app answers no status request; the others are not started).
        started = [name for name in self.services if name in ALL_SERVICES]
        waiting = asyncio.ensure_future(
            wait_until_ready(self.servers_of_phase.nats_client(), started, timeout_s=timeout_s)
        )
        try:
            while not waiting.done():
                self.check_alive()
                await asyncio.wait({waiting}, timeout=0.2)
            waiting.result()
        finally:
            waiting.cancel()

    async def wait_for_log(self, name: str, text: str, *, timeout_s: float = 90.0) -> float:
        """Monotonic time at which `text` first shows in the service's log."""
        path = self.log_path(name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if path.exists() and text in path.read_text(errors="replace"):
                return time.monotonic()
            await asyncio.sleep(0.01)
        raise PhaseFailed(f"{name} did not log {text!r} within {timeout_s:.0f} s; log: {path}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def running_fleet(fleet: ServiceFleet, *, ready: bool = True) -> AsyncIterator[ServiceFleet]:
    try:
        fleet.start()
        if ready:
            await fleet.wait_until_ready()
        yield fleet
    finally:
        await asyncio.to_thread(fleet.stop)


# --- sampling -------------------------------------------------------------------------------------------------


@dataclass
class ResourceSampler:
    """Resident memory of each service (max over samples) and CPU seconds of services and servers over a window."""

    services: dict[str, int]
    servers: dict[str, list[int]]
    interval_s: float = 0.5
    max_rss_mb: dict[str, float] = field(default_factory=dict)
    _cpu_start: dict[str, float] = field(default_factory=dict)
    _window_start: float = 0.0
    _machine_start: float = 0.0
    _task: asyncio.Task[None] | None = None

    def _processes(self, name: str) -> list[Any]:
        import psutil

        roots = [self.services[name]] if name in self.services else self.servers.get(name, [])
        found = []
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found.append(root)
                if name == "postgres":
                    # postgres forks a backend per connection; its CPU is the server's.
                    found.extend(root.children(recursive=True))
        return found

    def _cpu_seconds(self, name: str) -> float:
        import psutil

        total = 0.0
        for process in self._processes(name):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def sample_rss(self) -> None:
        import psutil

        for name, pid in self.services.items():
            with contextlib.suppress(psutil.Error):
                rss_mb = psutil.Process(pid).memory_info().rss / 1_048_576
                self.max_rss_mb[name] = max(self.max_rss_mb.get(name, 0.0), rss_mb)

    async def _run(self) -> None:
        while True:
            self.sample_rss()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="resource-sampler")

    def begin_cpu_window(self) -> None:
        self._window_start = time.monotonic()
        self._cpu_start = {name: self._cpu_seconds(name) for name in (*self.services, *self.servers)}
        self._machine_start = machine_busy_seconds()

    def cpu_cores_used(self) -> dict[str, float]:
        """Average cores each component used since `begin_cpu_window` (1.0 = one core fully busy).

        `other processes` is what the rest of the machine took meanwhile: a noisy neighbour shows up there.
        """
        elapsed = max(1e-9, time.monotonic() - self._window_start)
        return {name: round(seconds / elapsed, 2) for name, seconds in self.cpu_seconds_used().items()}

    def cpu_seconds_used(self) -> dict[str, float]:
        """CPU seconds each component used since `begin_cpu_window`, unrounded (for CPU per unit of work)."""
        used = {name: self._cpu_seconds(name) - start for name, start in self._cpu_start.items()}
        machine = machine_busy_seconds() - self._machine_start
        used[OTHER_PROCESSES] = max(0.0, machine - sum(used.values()))
        return used

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


OTHER_PROCESSES = "other processes"


def machine_busy_seconds() -> float:
    """CPU seconds every core spent on anything but idling, since boot."""
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


# --- load -----------------------------------------------------------------------------------------------------

Encoded = tuple[str, bytes, dict[str, str]]


def encoded_events(count: int, *, run_id: str | None = None) -> list[Encoded]:
    """Fresh discharges as a hospital sends them, to the intake: what the services' figures start from."""
    from bench.workload import sent_by_hospital, transition_events

    return [sent_by_hospital(event) for event in transition_events(count, run_id=run_id)]


def log_events(count: int) -> list[Encoded]:
    """Fresh discharges as events on the patient log (the raw limits and the naive and peer apps start there)."""
    from bench.workload import encoded, transition_events

    return [encoded(event) for event in transition_events(count)]


def encoded_stream(chunk: int = 1000) -> Iterator[Encoded]:
    """Endless fresh discharges, generated a chunk at a time (for when a pre-generated pool runs dry)."""
    while True:
        yield from encoded_events(chunk)


async def paced(rate_per_s: float, count: int) -> AsyncIterator[tuple[int, float]]:
    """(index, scheduled monotonic time) on a fixed schedule; late ticks are yielded at once, never skipped."""
    start = time.monotonic()
    for index in range(count):
        due = start + index / rate_per_s
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield index, due


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a value that was observed)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def publish_windowed(js: Any, messages: Iterable[Encoded], progress: Callable[[int], None] | None = None) -> int:
    """Publish with JetStream confirms windowed (`publish_async` blocks at the context's max pending), all confirmed."""
    pending: collections.deque[asyncio.Future[Any]] = collections.deque()
    sent = 0
    for subject, body, headers in messages:
        pending.append(await js.publish_async(subject, body, headers=headers))
        sent += 1
        while pending and pending[0].done():
            pending.popleft().result()
        if progress is not None and sent % 1000 == 0:
            progress(sent)
    await asyncio.gather(*pending)
    if progress is not None:
        progress(sent)
    return sent
