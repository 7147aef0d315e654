"""The stack a fault scenario runs on: servers of its own (one NATS or a cluster, Postgres) and the services.

The servers are always the embedded dev-stack ones started here, never the environment's: the scenarios stop,
kill and restart them. Every connection the suite makes goes through `Stack.connect` (NATS) and
`Stack.connect_database` (a service's database), the one place to adapt when the servers want credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client
from support.processes import SERVICES, ServiceProcesses
from support.webhook import WebhookReceiver, serve

from mtm.contracts.subjects import DISCHARGE_INTAKE_STREAM, PATIENT_EVENTS_STREAM
from mtm.devstack.cluster import NatsCluster
from mtm.devstack.embedded import EmbeddedNats, EmbeddedPostgres
from mtm.devstack.infra import Infrastructure
from mtm.platform.settings import nats_servers
from mtm.platform.status import service_statuses, wait_until_ready

WEBHOOK_SECRET = "faults-webhook-secret"
# What the suite changes in the services' defaults: JSON logs it can count lines in, and a notification lease short
# enough that an attempt cut off by kill -9 is retried within the run.
SERVICE_ENV = {
    "MTM_LOG_FORMAT": "json",
    "MTM_NOTIFY_LEASE_S": "10",
    "MTM_NOTIFY_POLL_S": "0.2",
}
READY_TIMEOUT_S = 180.0


async def _expected_while_faulting(exc: Exception) -> None:
    """Servers are stopped and killed on purpose here: the client reconnects, nothing to report."""


async def lagging_replicas(js: Any) -> list[str]:
    """Stream replicas that are not current (a node catching up after a restart): until they are, a reader placed
    on one of them sees an older log, so nothing is read back for an audit before."""
    lagging = []
    for info in await js.streams_info():
        for replica in (info.cluster.replicas or []) if info.cluster else []:
            if not replica.current or replica.offline:
                lagging.append(f"{info.config.name}: replica {replica.name} behind by {replica.lag or 0}")
    return lagging


class ServiceDied(RuntimeError):
    """A service process exited without being told to (its log says why)."""


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP receiver (`support.webhook`) that answers 200 and records every POST."""
    yield from serve(WebhookReceiver())


@dataclass
class Stack:
    """Private servers and the services as `python -m mtm.<service>` processes (`support.processes`)."""

    work_dir: Path
    nats_nodes: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    nats_server: EmbeddedNats | None = None
    cluster: NatsCluster | None = None
    postgres: EmbeddedPostgres | None = None
    services: ServiceProcesses | None = None
    _infra: Infrastructure | None = None

    # --- servers -------------------------------------------------------------------------------------------

    async def start_servers(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.nats_nodes > 1:
            self.cluster = NatsCluster(self.work_dir / "nats-cluster", size=self.nats_nodes, name="mtm-faults")
            await asyncio.to_thread(self.cluster.start)
            await self.cluster.wait_until_ready()
        else:
            self.nats_server = await asyncio.to_thread(EmbeddedNats(self.work_dir / "nats").start)
        self.postgres = await asyncio.to_thread(EmbeddedPostgres(self.work_dir / "postgres").start)

    @property
    def nats_url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        assert self.nats_server is not None, "servers not started"
        return self.nats_server.url

    @property
    def infra(self) -> Infrastructure:
        assert self.postgres is not None, "servers not started"
        if self._infra is None:
            self._infra = Infrastructure(
                nats_url=self.nats_url,
                database_url=self.postgres.url,
                nats_origin="embedded",
                database_origin="embedded",
            )
        return self._infra

    async def connect(self, name: str = "faults", *, servers: list[str] | None = None, **options: Any) -> Client:
        """How the suite's tools and auditors reach NATS: every seed (or the `servers` given), reconnecting for as
        long as it takes."""
        return await nats.connect(
            servers=servers or nats_servers(self.nats_url),
            name=name,
            error_cb=_expected_while_faulting,
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            **options,
        )

    def database_url(self, service: str) -> str:
        assert self.services is not None, "services not started"
        return self.services.env()[f"MTM_{service.upper()}_DATABASE_URL"]

    async def connect_database(self, service: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url(service), timeout=10)

    # --- services ------------------------------------------------------------------------------------------

    async def start(self) -> Stack:
        await self.start_servers()
        env = {**SERVICE_ENV, "MTM_STREAM_REPLICAS": str(self.nats_nodes), **self.extra_env}
        self.services = ServiceProcesses(self.infra, self.work_dir / "logs", extra_env=env)
        self.services.start_all()
        await self.wait_ready()
        return self

    def pids(self) -> dict[str, int]:
        assert self.services is not None
        return {name: process.pid for name, process in self.services.processes.items()}

    def check_alive(self) -> None:
        assert self.services is not None
        for name in SERVICES:
            if not self.services.alive(name):
                raise ServiceDied(f"{name} exited with {self.services.processes[name].returncode}; see its log")

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every service reports ready on its status subject; a service that exits meanwhile fails it."""
        await wait_until_ready(self.nats_url, timeout_s=timeout_s, check=self.check_alive)

    async def not_ready(self) -> dict[str, list[str]]:
        """What each service that does not report ready says (or that it does not answer)."""
        from mtm.platform.status import not_ready

        nc = await self.connect("faults-status")
        try:
            return not_ready(await service_statuses(nc))
        finally:
            await nc.close()

    def logs(self, service: str) -> str:
        assert self.services is not None
        return self.services.logs(service)

    def log_lines(self, text: str) -> dict[str, int]:
        """Lines in each service's log that contain `text` (across restarts: the log is appended to)."""
        return {service: self.logs(service).count(text) for service in SERVICES}

    async def outbox_rows(self) -> dict[str, int]:
        """Rows still waiting in each service's outbox (0 everywhere: every relay delivered what it was given)."""
        rows = {}
        for service in SERVICES:
            conn = await self.connect_database(service)
            try:
                rows[service] = int(await conn.fetchval("SELECT count(*) FROM public.outbox"))
            finally:
                await conn.close()
        return rows

    async def still_moving(self) -> list[str]:
        """What is not settled yet: a service consumer with messages pending, an outbox row, a notification due."""
        moving = []
        nc = await self.connect("faults-settle")
        try:
            js = nc.jetstream()
            moving += await lagging_replicas(js)
            for stream in (DISCHARGE_INTAKE_STREAM, PATIENT_EVENTS_STREAM):
                for consumer in await js.consumers_info(stream):
                    name = consumer.config.durable_name
                    if name and not name.startswith("faults-") and (consumer.num_pending or consumer.num_ack_pending):
                        moving.append(f"{name}: {consumer.num_pending} pending, {consumer.num_ack_pending} unacked")
        finally:
            await nc.close()
        moving += [f"{service} outbox: {rows} rows" for service, rows in (await self.outbox_rows()).items() if rows]
        conn = await self.connect_database("notify")
        try:
            due = await conn.fetchval("SELECT count(*) FROM projection.notifications WHERE status = 'pending'")
        finally:
            await conn.close()
        if due:
            moving.append(f"notify: {due} notifications pending")
        return moving

    async def settle(self, *, timeout_s: float) -> list[str]:
        """Until nothing moves twice in a row (an event relayed between two looks would slip by one); what still
        moved when `timeout_s` ran out otherwise."""
        deadline = time.monotonic() + timeout_s
        quiet_rounds = 0
        moving: list[str] = []
        while time.monotonic() < deadline:
            try:
                moving = await self.still_moving()
            except Exception as exc:  # a server still coming back
                moving = [f"not answering ({type(exc).__name__})"]
            quiet_rounds = 0 if moving else quiet_rounds + 1
            if quiet_rounds >= 2:
                return []
            await asyncio.sleep(0.5)
        return moving

    async def stop(self) -> dict[str, int]:
        codes: dict[str, int] = {}
        if self.services is not None:
            codes = await asyncio.to_thread(self.services.stop_all)
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.stop)
        if self.nats_server is not None:
            await asyncio.to_thread(self.nats_server.stop)
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        return codes
