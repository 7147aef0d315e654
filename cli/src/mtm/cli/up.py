"""`mtm up`: one stack per data directory, no leftovers of a killed run, "up" only once every service says ready."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from mtm.cli.identity import ensure_dev_keys, ensure_key_encryption_key, private_key_file, session_secret_file
from mtm.cli.stack import data_dir, stack_file, write_stack_file
from mtm.contracts.admin import SERVICES
from mtm.devstack import processes
from mtm.devstack.infra import Infrastructure, resolve_infrastructure
from mtm.devstack.lock import AlreadyRunning, DataDirLock
from mtm.platform.connection import NatsClient
from mtm.platform.status import wait_until_ready

# The user the `mtm` commands (and `mtm up` itself, waiting for the services) connect as.
TOOL_USER = "cli"

READY_TIMEOUT_S = 120.0
# The four services, then the web app (`python -m mtm.web`), the fifth process.
PROCESSES = (*SERVICES, "web")
WEB_PORT = 8000
RESTART_DELAY_S = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
T = TypeVar("T")
Say = Callable[[str], None]


def redact(url: str) -> str:
    """A URL fit to print: no password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Interrupted(Exception):
    """A stop signal arrived; what was started is stopped on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP only take note; start-up checks between steps and stops what it started.

    Raising from the handler could land between starting a server and recording it, and leave it behind.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def _note(self, signum: int, _frame: object) -> None:
        self.received = signum

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        previous = {signum: signal.signal(signum, self._note) for signum in STOP_SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)

    async def unless_stopped(self, work: Awaitable[T]) -> T:
        """`work`, cancelled as soon as a stop signal is noted."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                self.check()
                await asyncio.wait({task}, timeout=0.1)
            return task.result()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@dataclass
class Supervised:
    """One service process, in a session of its own (a terminal's Ctrl-C reaches `mtm up`, which stops it)."""

    name: str
    env: dict[str, str]
    log_path: Path
    pid_file: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    http_port: int | None = None
    """Where it serves /healthz, /readyz and /metrics (MTM_HTTP_PORT)."""

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"mtm.{self.name}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.record(self.pid_file, self.process.pid)


def web_port() -> int:
    """MTM_WEB_PORT, else 8000 when it is free, else any free port."""
    if wanted := os.environ.get("MTM_WEB_PORT"):
        return int(wanted)
    for candidate in (WEB_PORT, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port for the web app")


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (each process's health and metrics server)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def web_ready(url: str, *, timeout_s: float, check: Callable[[], None]) -> None:
    """Until the web app answers ready on /healthz (connected to NATS and its database)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            check()
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the web app at {url} did not report ready within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class StackInfo:
    """What a demo needs of the running stack."""

    nats: NatsClient
    """The `mtm` commands' connection (the `cli` user)."""
    web_database_url: str
    """The web app's accounts database, as the web app's role."""
    web_url: str


@dataclass
class Stack:
    base: Path
    infra: Infrastructure | None = None
    services: list[Supervised] = field(default_factory=list)
    web_url: str = ""

    @property
    def run_dir(self) -> Path:
        return self.base / "run"

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def stop_leftovers(self, say: Say) -> None:
        """Service processes a killed `mtm up` left running (the embedded NATS and Postgres see to their own)."""
        stopped = processes.stop_leftovers(*(self.pid_file(name) for name in PROCESSES))
        for path, pid in stopped.items():
            say(f"stopped {path.stem} (pid {pid}), left running by an earlier mtm up")

    def start_servers(self) -> Infrastructure:
        self.infra = resolve_infrastructure(self.base / "embedded")
        return self.infra

    def start_services(self, extra_env: dict[str, str]) -> None:
        missing = [name for name in PROCESSES if importlib.util.find_spec(f"mtm.{name}") is None]
        if missing:
            raise RuntimeError(f"services not installed: {', '.join(missing)} (uv sync --all-packages installs them)")
        assert self.infra is not None
        port = web_port()
        self.web_url = f"http://127.0.0.1:{port}"
        common = {
            **os.environ,
            # Services verify actor tokens with the local stack's key; the web app signs them with it.
            "MTM_ACTOR_PUBLIC_KEYS_FILE": str(ensure_dev_keys()),
            **extra_env,
        }
        # Each process gets the secrets it uses and no other's.
        private = {
            # Reconciliation keeps the patients' event keys, wrapped with this.
            "reconciliation": {"MTM_KEY_ENCRYPTION_KEY_FILE": str(ensure_key_encryption_key())},
            # Emails to physicians (when an SMTP server is set) link to the referral in the web app.
            "notify": {"MTM_NOTIFY_WEB_URL": self.web_url},
            "web": {
                "MTM_WEB_SIGNING_KEY_FILE": str(private_key_file()),
                "MTM_WEB_SESSION_SECRET_FILE": str(session_secret_file()),
                "MTM_WEB_HOST": "127.0.0.1",
                "MTM_WEB_PORT": str(port),
            },
        }
        for name, http_port in zip(PROCESSES, free_ports(len(PROCESSES)), strict=True):
            # Each with its own NATS user and its own database role, and nobody else's.
            env = {
                **common,
                **private.get(name, {}),
                **self.infra.service_env(name, database=f"mtm_{name}"),
                "MTM_HTTP_PORT": str(http_port),
            }
            service = Supervised(
                name, env, self.base / "logs" / f"{name}.log", self.pid_file(name), http_port=http_port
            )
            self.services.append(service)
            service.start()
        write_stack_file(
            self.infra.nats_client(TOOL_USER),
            web_url=self.web_url,
            # `mtm user add/list` work on the web app's accounts, as the web app's role.
            web_database_url=self.infra.service_database("web", "mtm_web"),
        )

    def describe(self) -> str:
        assert self.infra is not None
        secured = "TLS, a user per service and tool" if self.infra.secured else "as configured"
        lines = [
            f"NATS      {self.infra.nats_url}  ({self.infra.nats_origin}; {secured})",
            f"Postgres  {redact(self.infra.database_url)}  ({self.infra.database_origin}; one database per service "
            + "and the web app: "
            + ", ".join(f"mtm_{s}" for s in PROCESSES)
            + (", each owned by its own role" if self.infra.secured else "")
            + ")",
        ]
        for service in self.services:
            pid = service.process.pid if service.process else "-"
            lines.append(f"{service.name:<14} pid {pid:<8} log {service.log_path}")
            if service.http_port is not None:
                probes = f"http://127.0.0.1:{service.http_port}"
                lines.append(f"{'':<14} health {probes}/healthz  ready {probes}/readyz  metrics {probes}/metrics")
        return "\n".join(lines)

    def supervise_once(self, say: Say) -> None:
        for service in self.services:
            if service.process is None or service.process.poll() is None:
                continue
            say(f"{service.name} exited with code {service.process.returncode}; restarting")
            time.sleep(RESTART_DELAY_S)
            service.restarts += 1
            service.start()

    def stop(self) -> None:
        """Services first (each finishes its batch and flushes its outbox), then NATS and Postgres."""
        live = [s.process for s in self.services if s.process is not None and s.process.poll() is None]
        for process in live:
            process.terminate()
        deadline = time.monotonic() + processes.STOP_GRACE_S
        for process in live:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for service in self.services:
            service.pid_file.unlink(missing_ok=True)
        if self.infra is not None:
            self.infra.stop()
        stack_file().unlink(missing_ok=True)


def up(
    say: Say,
    *,
    extra_env: dict[str, str] | None = None,
    demo: Callable[[StackInfo], Awaitable[int]] | None = None,
    exit_after_demo: bool = False,
) -> int:
    """Run the stack until a stop signal (or until the demo is done, with `exit_after_demo`); the exit code."""
    base = data_dir()
    try:
        lock = DataDirLock(base).acquire()
    except AlreadyRunning as exc:
        print(f"mtm up: {exc}", file=sys.stderr)
        return 1
    stack = Stack(base)
    loop = asyncio.new_event_loop()
    status = 0
    announced = False
    with StopSignals().installed() as signals:
        try:
            stack.stop_leftovers(say)
            signals.check()
            say("starting NATS and Postgres ...")
            infra = stack.start_servers()
            signals.check()
            stack.start_services(extra_env or {})
            say(stack.describe())
            say("services started; waiting until each one reports ready ...")

            def tend() -> None:
                signals.check()
                stack.supervise_once(say)

            tool = infra.nats_client(TOOL_USER)
            ready = wait_until_ready(tool, timeout_s=READY_TIMEOUT_S, check=tend)
            loop.run_until_complete(signals.unless_stopped(ready))
            say(f"all {len(SERVICES)} services are up.")
            loop.run_until_complete(
                signals.unless_stopped(web_ready(stack.web_url, timeout_s=READY_TIMEOUT_S, check=tend))
            )
            say(f"web app is up: {stack.web_url}")
            announced = True
            if demo is not None:
                info = StackInfo(tool, infra.service_database("web", "mtm_web"), stack.web_url)
                status = loop.run_until_complete(signals.unless_stopped(demo(info)))
                if exit_after_demo:
                    return status
            say("stack is up; Ctrl-C stops everything.")
            while signals.received is None:
                stack.supervise_once(say)
                time.sleep(0.2)
            return status
        except Interrupted as exc:
            if announced:
                return status
            say(f"{exc} during start-up")
            return 128 + exc.signum
        except TimeoutError as exc:
            say(f"{exc}; see the service logs above")
            return 1
        except (RuntimeError, OSError) as exc:
            say(f"mtm up: {exc}")
            return 1
        finally:
            say("stopping ...")
            stack.stop()
            loop.close()
            lock.release()
            say("stopped.")
