"""`mtm up` as a person runs it: SIGKILLed, started twice, interrupted while it starts; nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import httpx
import psutil
import pytest
from support.jetstream import wait_for
from support.services import native_discharge, new_patient_id

from mtm.cli.up import PROCESSES
from mtm.contracts import ReviewTaskCreated
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, event_filter, patient_of_subject
from mtm.platform.connection import NatsClient

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 240.0


class MtmUp:
    """`mtm up` in a session of its own (as a terminal's foreground job), its output collected line by line."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {
            name: value for name, value in os.environ.items() if name not in {"MTM_NATS_URL", "MTM_DATABASE_URL"}
        }
        # The embedded servers under the data dir are what is tested: never containers, even where Docker answers.
        self.env.update(MTM_DATA_DIR=str(data_dir), DOCKER_HOST="unix:///nonexistent/docker.sock")
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> MtmUp:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mtm.cli.main", "up"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.2)  # let the reader thread catch the last lines
                pytest.fail(f"`mtm up` never said {text!r} (exit code {self.process.poll()}):\n{self.output()}")
            time.sleep(0.05)

    def wait(self, timeout_s: float = 120.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.pid).children(recursive=True)


def stack_processes(data_dir: Path) -> list[psutil.Process]:
    """Live processes that belong to the stack on `data_dir`: started with it in their environment (services,
    nats-server) or naming it on their command line (the postmaster, whose children die with it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if str(data_dir) in " ".join(process.cmdline()) or process.environ().get("MTM_DATA_DIR") == str(data_dir):
                found.append(process)
        except psutil.Error:
            continue
    return found


def is_tls_front(process: psutil.Process) -> bool:
    return "mtm.devstack.pgtls" in process.cmdline()


def nats_servers(data_dir: Path) -> list[psutil.Process]:
    return [p for p in stack_processes(data_dir) if p.name() == "nats-server"]


def gone(processes: list[psutil.Process]) -> bool:
    def is_gone(process: psutil.Process) -> bool:
        try:
            return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(is_gone(p) for p in processes)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short on purpose: Postgres's socket path lives under it and must stay within the OS limit (~100 bytes).
    path = Path(tempfile.mkdtemp(prefix="mtm-up-"))
    yield path
    for process in stack_processes(path):  # only when a test failed half-way
        process.kill()
    shutil.rmtree(path, ignore_errors=True)


async def a_discharge_flows_to_a_review_task(client: NatsClient) -> None:
    nc = await client.connect()
    try:
        patient = new_patient_id()
        tasks: list[str] = []

        async def on_task(msg) -> None:
            # A tool learns from the envelope whose task it is (the task itself is sealed; it asks review for it).
            tasks.append(patient_of_subject(msg.subject))

        await nc.subscribe(event_filter(ReviewTaskCreated), cb=on_task)
        event = native_discharge(patient)
        await nc.jetstream().publish(
            DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
        )
        await wait_for(lambda: patient in tasks, timeout_s=60)
    finally:
        await nc.drain()


def probe_addresses(output: str) -> dict[str, str]:
    """`name → http://host:port` from what `mtm up` prints: a process's line, then its health/ready/metrics line."""
    found: dict[str, str] = {}
    lines = output.splitlines()
    for line, following in pairwise(lines):
        name = line.split(" ", 1)[0]
        if name in PROCESSES and " pid " in line and following.strip().startswith("health "):
            found[name] = following.split()[1].removesuffix("/healthz")
    return found


async def every_process_serves_its_probes(addresses: dict[str, str]) -> None:
    """Each service and the web app: alive, ready under its own name, and its metrics in Prometheus's format."""
    async with httpx.AsyncClient(timeout=5) as http:
        for name, address in addresses.items():
            assert (await http.get(f"{address}/healthz")).json() == {"status": "ok"}, name

            async def ready(address: str = address) -> dict | None:
                answer = await http.get(f"{address}/readyz")
                return answer.json() if answer.status_code == 200 else None

            assert (await wait_for(ready, timeout_s=60))["service"] == name
            metrics = await http.get(f"{address}/metrics")
            assert metrics.headers["content-type"].startswith("text/plain"), name
            assert ("mtm_ready 1.0" if name != "web" else "mtm_web_live_streams 0.0") in metrics.text, name


def test_after_a_killed_mtm_up_the_next_one_comes_up_alone_and_consumes(data_dir: Path) -> None:
    first = MtmUp(data_dir).start()
    first.wait_for_line("stack is up")
    # Its Postgres (and the Postgres's TLS front) the next one adopts; its NATS server and services it replaces.
    first_services = [p for p in first.descendants() if p.name() != "nats-server" and not is_tls_front(p)]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # What a killed `mtm up` leaves: its NATS server and its services keep running.
    assert len(nats_servers(data_dir)) == 1 and not gone(first_services)

    second = MtmUp(data_dir).start()
    try:
        second.wait_for_line("stack is up")
        assert len(nats_servers(data_dir)) == 1, [p.cmdline() for p in nats_servers(data_dir)]
        assert gone(first_services)
        assert "left running by an earlier mtm up" in second.output()

        third = subprocess.run(
            [sys.executable, "-m", "mtm.cli.main", "up"], env=second.env, capture_output=True, text=True, timeout=120
        )
        assert third.returncode != 0
        assert f"pid {second.pid}" in third.stderr and "is running" in third.stderr

        stack = json.loads((data_dir / "stack.json").read_text())
        # As the `mtm` commands do: the stack's CLI user, over TLS verified against the stack's CA.
        asyncio.run(a_discharge_flows_to_a_review_task(NatsClient.model_validate(stack["nats"])))
        # The operator's commands go through as the CLI's user: an account in the web app's database (as the web
        # app's role), a sign-in at the web app `mtm up` started, a rebuild and its report, a query.
        said = {}
        env = {**second.env, "MTM_PASSWORD": "ops-password-9"}
        commands = (
            ["user", "add", "ops", "--role", "admin"],
            ["login", "ops"],
            ["rebuild", "review", "--json"],
            ["tasks", "--json"],
        )
        for command in commands:
            done = subprocess.run(
                [sys.executable, "-m", "mtm.cli.main", *command], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            said[command[0]] = done.stdout
        assert json.loads(said["rebuild"])["phase"] == "swapped"
        assert json.loads(said["tasks"])["outcome"] == "accepted"
        # What it printed for each process answers: health, readiness and metrics, the web app's included.
        second_start = second.output().rsplit("left running by an earlier mtm up", 1)[-1]
        addresses = probe_addresses(second_start)
        assert sorted(addresses) == sorted(PROCESSES), second.output()
        asyncio.run(every_process_serves_its_probes(addresses))
    finally:
        second.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert second.wait() == 0, second.output()
    assert stack_processes(data_dir) == [], [p.cmdline() for p in stack_processes(data_dir)]
    assert_no_secret_was_written_out(data_dir, first.output() + second.output())


def assert_no_secret_was_written_out(data_dir: Path, output: str) -> None:
    """No generated password in what `mtm up` printed, nor in any log of its services and servers."""
    generated = json.loads((data_dir / "embedded" / "security" / "secrets.json").read_text())
    passwords = [password for kind in generated.values() for password in kind.values()]
    assert len(passwords) >= 10
    logs = [path for path in data_dir.rglob("*.log") if path.is_file()]
    assert {path.name for path in logs} >= {"reconciliation.log", "nats-server.log", "postgres.log"}
    for text in (output, *(path.read_text(errors="replace") for path in logs)):
        assert not [p for p in passwords if p in text]


@pytest.mark.parametrize(
    ("signum", "moment", "whole_group"),
    [
        pytest.param(signal.SIGINT, "services started", True, id="Ctrl-C while the services start"),
        pytest.param(signal.SIGTERM, "starting NATS and Postgres", False, id="SIGTERM while the servers start"),
    ],
)
def test_a_stop_signal_during_start_up_leaves_no_process_behind(
    data_dir: Path, signum: int, moment: str, whole_group: bool
) -> None:
    up = MtmUp(data_dir).start()
    up.wait_for_line(moment)
    started = up.descendants()
    if whole_group:
        os.killpg(up.pid, signum)  # what a terminal's Ctrl-C does: the whole foreground process group
    else:
        os.kill(up.pid, signum)

    assert up.wait() == 128 + signum, up.output()
    assert "stack is up" not in up.output() and "during start-up" in up.output()
    assert gone(started)
    assert stack_processes(data_dir) == [], [p.cmdline() for p in stack_processes(data_dir)]
    assert not list((data_dir / "run").glob("*.pid")) and not (data_dir / "stack.json").exists()
