"""The services as real OS processes on the test infrastructure, each with a database of its own."""

from __future__ import annotations

import base64
import ctypes
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mtm.devstack.infra import Infrastructure
from support import actors

KEK = base64.b64encode(os.urandom(32)).decode()

SERVICES = ("reconciliation", "review", "referral", "notify", "program")

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up here, not in the child: between fork and exec the child may only call what needs no import or lock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_harness() -> None:
    """Runs in the child before exec: the kernel kills it when the thread that started it ends, so a harness that
    is itself killed (Ctrl-C twice, SIGKILL, an abandoned fault run) cannot leave services running behind it.
    Every caller starts services from the main thread."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ServiceProcesses:
    infra: Infrastructure
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self, name: str) -> dict[str, str]:
        """The service's environment: its own NATS user and database role, as `mtm up` gives it (and the
        key-encryption key to the key keeper alone)."""
        env = {
            **os.environ,
            **self.infra.service_env(name, database=f"e2e_{name}_{self.run_id}"),
            "MTM_FETCH_TIMEOUT_S": "0.01",
            "MTM_OUTBOX_POLL_S": "0.1",
            "MTM_ACK_WAIT_S": "5",
            "MTM_ACTOR_PUBLIC_KEYS": actors.PUBLIC_KEY,
            **self.extra_env,
        }
        if name == "reconciliation":
            env["MTM_KEY_ENCRYPTION_KEY"] = KEK
        return env

    def start(self, name: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"mtm.{name}"],
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_harness,
            )

    def start_all(self) -> None:
        for name in SERVICES:
            self.start(name)

    def kill(self, name: str) -> None:
        """kill -9: no shutdown hook runs, whatever was in flight is cut off."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def stop_all(self) -> dict[str, int]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def logs(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""
