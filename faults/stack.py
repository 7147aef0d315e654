"""The stack a fault scenario runs on: servers of its own (one NATS or a cluster, Postgres) and the services.

The servers are always the embedded dev-stack ones started here, never the environment's: the scenarios stop,
kill and restart them. They are secured as `mtm up` runs them (TLS, a NATS user per service, tool and integrator
from the access table, a Postgres role per service), a cluster's nodes too. Every connection the suite makes goes
through `Stack.connect` (NATS, as a named user) and `Stack.connect_database` (a service's database, as its role).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
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
from mtm.devstack import processes
from mtm.devstack.cluster import ClusterNode, NatsCluster
from mtm.devstack.embedded import LOOPBACK, EmbeddedNats, EmbeddedPostgres, _wait_for_port, nats_server_binary
from mtm.devstack.infra import Infrastructure
from mtm.devstack.security import LocalSecurity
from mtm.devstack.tls import write_private
from mtm.platform.access import ADMIN, ServerTLS, nats_server_config
from mtm.platform.connection import NatsClient
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
# Who the suite's operator checks (service status) connect as: the mtm command's user, as `mtm status` does.
OPERATOR = "cli"


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


@dataclass
class SecuredCluster(NatsCluster):
    """The dev stack's NATS cluster with each node secured as `EmbeddedNats` is: the access table's accounts and
    users, passwords from `security`, TLS for clients (routes stay plain, on loopback)."""

    security: LocalSecurity = field(kw_only=True)

    def node_url(self, node: ClusterNode) -> str:
        return f"tls://{LOOPBACK}:{node.client_port}"

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    @property
    def urls(self) -> list[str]:
        return [self.node_url(node) for node in self.nodes]

    def client(self, user: str) -> NatsClient:
        return self.security.nats_client(self.url, user)

    def _config(self, node: ClusterNode) -> Path:
        certificate = self.security.server_certificate("nats")
        text = nats_server_config(
            host=LOOPBACK,
            port=node.client_port,
            server_name=node.name,
            store_dir=str(node.data_dir / "jetstream"),
            tls=ServerTLS(cert_file=str(certificate.cert), key_file=str(certificate.key)),
        )
        routes = [f"nats://{LOOPBACK}:{other.cluster_port}" for other in self.nodes if other is not node]
        listen = f"{LOOPBACK}:{node.cluster_port}"
        text += f"cluster {{\n  name: {json.dumps(self.name)}\n  listen: {json.dumps(listen)}\n"
        text += f"  routes: {json.dumps(routes)}\n}}\n"
        path = node.data_dir / "nats-server.conf"
        write_private(path, text.encode())
        return path

    def start_node(self, name: str, *, timeout_s: float = 30.0) -> ClusterNode:
        """Start (or start again) one node on its own ports and store, with the stack's users and certificate."""
        node = self.node(name)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        processes.stop_leftover(node.pid_file)
        config = self._config(node)
        with open(node.data_dir / "nats-server.log", "ab") as log_file:
            node.process = subprocess.Popen(
                [nats_server_binary(), "--config", str(config)],
                # The configuration names each password as a variable; they come from here, never from the file.
                env={**os.environ, **self.security.nats_environment()},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.record(node.pid_file, node.process.pid, port=node.client_port)
        _wait_for_port(node.client_port, timeout_s=timeout_s, process=node.process)
        return node

    async def wait_until_ready(self, *, timeout_s: float = 60.0) -> None:
        """Until JetStream answers the admin through every running node (the meta group has a leader)."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if not node.running:
                continue
            client = self.security.nats_client(self.node_url(node), ADMIN)
            while True:
                try:
                    nc = await client.connect(connect_timeout=2, max_reconnect_attempts=0)
                    try:
                        await nc.jetstream().account_info()
                        break
                    finally:
                        await nc.close()
                except Exception:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"JetStream not ready on {node.name} after {timeout_s:.0f} s") from None
                    await asyncio.sleep(0.2)


@dataclass
class StackInfrastructure(Infrastructure):
    """The stack's servers as the services and the suite reach them: on a cluster, each user connects to every node
    with its own credentials (`Infrastructure` knows a single embedded server's only)."""

    cluster: SecuredCluster | None = None

    def nats_client(self, user: str = ADMIN) -> NatsClient:
        if self.cluster is not None:
            return self.cluster.client(user)
        return super().nats_client(user)


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
    cluster: SecuredCluster | None = None
    postgres: EmbeddedPostgres | None = None
    services: ServiceProcesses | None = None
    _infra: Infrastructure | None = None
    _security: LocalSecurity | None = None

    # --- servers -------------------------------------------------------------------------------------------

    async def start_servers(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        security = LocalSecurity(self.work_dir / "security")
        if self.nats_nodes > 1:
            self.cluster = SecuredCluster(
                self.work_dir / "nats-cluster", size=self.nats_nodes, name="mtm-faults", security=security
            )
            await asyncio.to_thread(self.cluster.start)
            await self.cluster.wait_until_ready()
        else:
            self.nats_server = await asyncio.to_thread(EmbeddedNats(self.work_dir / "nats", security).start)
        self.postgres = await asyncio.to_thread(EmbeddedPostgres(self.work_dir / "postgres", security).start)
        self._security = security

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
            self._infra = StackInfrastructure(
                nats_url=self.nats_url,
                database_url=self.postgres.url,
                nats_origin="embedded",
                database_origin="embedded",
                security=self._security,
                nats_server=self.nats_server,
                postgres=self.postgres,
                cluster=self.cluster,
            )
        return self._infra

    def node_urls(self, *, leaving_out: str | None = None) -> list[str]:
        """The cluster's nodes as clients reach them, but the one named `leaving_out`."""
        assert self.cluster is not None, "not a cluster"
        return [self.cluster.node_url(node) for node in self.cluster.nodes if node.name != leaving_out]

    async def connect(
        self, name: str = "faults", *, user: str = ADMIN, servers: list[str] | None = None, **options: Any
    ) -> Client:
        """How the suite reaches NATS: as `user` (its password, TLS, its own inbox), at every seed (or the `servers`
        given), reconnecting for as long as it takes. The admin by default: the auditors and settle checks read
        every stream and consumer, which no other user may."""
        connection = self.infra.nats_client(user).options()
        if servers:
            connection["servers"] = servers
        defaults: dict[str, Any] = {
            "name": name,
            "error_cb": _expected_while_faulting,
            "connect_timeout": 5,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.25,
        }
        return await nats.connect(**connection, **{**defaults, **options})

    def database_url(self, service: str) -> str:
        assert self.services is not None, "services not started"
        return self.services.env(service)[f"MTM_{service.upper()}_DATABASE_URL"]

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
        await wait_until_ready(self.infra.nats_client(OPERATOR), timeout_s=timeout_s, check=self.check_alive)

    async def not_ready(self) -> dict[str, list[str]]:
        """What each service that does not report ready says (or that it does not answer)."""
        from mtm.platform.status import not_ready

        nc = await self.connect("faults-status", user=OPERATOR)
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
