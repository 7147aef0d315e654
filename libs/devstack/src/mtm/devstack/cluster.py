"""A NATS cluster on loopback for fault tests: several nats-server processes with JetStream, routed to each other.

Each node keeps its store under its own directory and its ports for life, so a node killed with SIGKILL and
started again rejoins the cluster with what it had. Clients connect with `url` (every seed, comma-separated, the
form `MTM_NATS_URL` takes); `node_of` says which node a stream's RAFT leader is.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mtm.devstack import processes
from mtm.devstack.embedded import LOOPBACK, _wait_for_port, free_port, nats_server_binary
from mtm.platform.logging import get_logger

log = get_logger(__name__)


@dataclass
class ClusterNode:
    name: str
    data_dir: Path
    client_port: int
    cluster_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "nats-server.pid"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsCluster:
    """`size` nats-server processes named `<name>-1`… with JetStream, one cluster, routes to every other node."""

    data_dir: Path
    size: int = 3
    name: str = "mtm-cluster"
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self, *, timeout_s: float = 30.0) -> NatsCluster:
        if not self.nodes:
            self.nodes = [
                ClusterNode(f"{self.name}-{n}", self.data_dir / f"node-{n}", free_port(), free_port())
                for n in range(1, self.size + 1)
            ]
        for node in self.nodes:
            self.start_node(node.name, timeout_s=timeout_s)
        return self

    def start_node(self, name: str, *, timeout_s: float = 30.0) -> ClusterNode:
        """Start (or start again) one node on its own ports and store."""
        node = self.node(name)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        processes.stop_leftover(node.pid_file)
        routes = ",".join(f"nats://{LOOPBACK}:{other.cluster_port}" for other in self.nodes if other is not node)
        with open(node.data_dir / "nats-server.log", "ab") as log_file:
            node.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "--jetstream",
                    "--store_dir",
                    str(node.data_dir / "jetstream"),
                    "--addr",
                    LOOPBACK,
                    "--port",
                    str(node.client_port),
                    "--server_name",
                    node.name,
                    "--cluster_name",
                    self.name,
                    "--cluster",
                    f"nats://{LOOPBACK}:{node.cluster_port}",
                    "--routes",
                    routes,
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.record(node.pid_file, node.process.pid, port=node.client_port)
        _wait_for_port(node.client_port, timeout_s=timeout_s, process=node.process)
        log.info("cluster node started", port=node.client_port, pid=node.process.pid)
        return node

    def kill(self, name: str) -> None:
        """kill -9 one node: no shutdown, no leadership handed over."""
        node = self.node(name)
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait()
        node.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            node.pid_file.unlink(missing_ok=True)

    async def wait_until_ready(self, *, timeout_s: float = 60.0) -> None:
        """Until JetStream answers through every running node (the meta group has a leader)."""
        import nats

        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if not node.running:
                continue
            while True:
                try:
                    nc = await nats.connect(node.url, connect_timeout=2, max_reconnect_attempts=0)
                    try:
                        await nc.jetstream().account_info()
                        break
                    finally:
                        await nc.close()
                except Exception:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"JetStream not ready on {node.name} after {timeout_s:.0f} s") from None
                    await asyncio.sleep(0.2)
