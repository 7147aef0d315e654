"""The services as real OS processes on the test infrastructure, each with a database of its own."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mtm.devstack.infra import Infrastructure
from mtm.platform.settings import with_database
from support import actors

KEK = base64.b64encode(os.urandom(32)).decode()

SERVICES = ("reconciliation", "review", "referral", "notify", "program")


@dataclass
class ServiceProcesses:
    infra: Infrastructure
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "MTM_NATS_URL": self.infra.nats_url,
            "MTM_DATABASE_URL": self.infra.database_url,
            "MTM_FETCH_TIMEOUT_S": "0.01",
            "MTM_OUTBOX_POLL_S": "0.1",
            "MTM_ACK_WAIT_S": "5",
            "MTM_ACTOR_PUBLIC_KEYS": actors.PUBLIC_KEY,
            "MTM_KEY_ENCRYPTION_KEY": KEK,
            **self.extra_env,
        }
        for name in SERVICES:
            env[f"MTM_{name.upper()}_DATABASE_URL"] = with_database(
                self.infra.database_url, f"e2e_{name}_{self.run_id}"
            )
        return env

    def start(self, name: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"mtm.{name}"], env=self.env(), stdout=log, stderr=subprocess.STDOUT
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
