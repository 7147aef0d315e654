"""`mtm up`: NATS and Postgres (environment or embedded), the four services as supervised processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    from mtm.devstack.infra import Infrastructure

SERVICES = ("reconciliation", "review", "referral", "notify")
STOP_GRACE_S = 20.0
RESTART_DELAY_S = 1.0


def data_dir() -> Path:
    return Path(os.environ.get("MTM_DATA_DIR") or platformdirs.user_data_dir("mtm"))


def stack_file() -> Path:
    return data_dir() / "stack.json"


def nats_url() -> str:
    """Where tools find NATS: MTM_NATS_URL, else the stack `mtm up` started, else the default port."""
    if url := os.environ.get("MTM_NATS_URL"):
        return url
    try:
        return str(json.loads(stack_file().read_text())["nats_url"])
    except (OSError, ValueError, KeyError):
        return "nats://127.0.0.1:4222"


@dataclass
class Supervised:
    name: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"mtm.{self.name}"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )


@dataclass
class Stack:
    infra: Infrastructure
    services: list[Supervised] = field(default_factory=list)
    stopping: bool = False

    def describe(self) -> str:
        lines = [
            f"NATS      {self.infra.nats_url}  ({self.infra.nats_origin})",
            f"Postgres  {self.infra.database_url}  ({self.infra.database_origin}; one database per service: "
            + ", ".join(f"mtm_{s}" for s in SERVICES)
            + ")",
        ]
        for service in self.services:
            pid = service.process.pid if service.process else "-"
            lines.append(f"{service.name:<14} pid {pid:<8} log {service.log_path}")
        return "\n".join(lines)

    def supervise_once(self, say: Callable[[str], None]) -> None:
        for service in self.services:
            if self.stopping or service.process is None or service.process.poll() is None:
                continue
            say(f"{service.name} exited with code {service.process.returncode}; restarting")
            time.sleep(RESTART_DELAY_S)
            service.restarts += 1
            service.start()

    def stop(self) -> None:
        self.stopping = True
        for service in self.services:
            if service.process and service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for service in self.services:
            if service.process is None:
                continue
            try:
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        self.infra.stop()
        stack_file().unlink(missing_ok=True)


def start_stack(extra_env: dict[str, str] | None = None, *, log_dir: Path | None = None) -> Stack:
    from mtm.devstack.infra import resolve_infrastructure

    base = data_dir()
    infra = resolve_infrastructure(base / "embedded")
    env = {
        **os.environ,
        "MTM_NATS_URL": infra.nats_url,
        "MTM_DATABASE_URL": infra.database_url,
        **(extra_env or {}),
    }
    logs = log_dir or base / "logs"
    stack = Stack(infra=infra)
    for name in SERVICES:
        service = Supervised(name=name, env=env, log_path=logs / f"{name}.log")
        service.start()
        stack.services.append(service)
    stack_file().parent.mkdir(parents=True, exist_ok=True)
    stack_file().write_text(json.dumps({"nats_url": infra.nats_url, "database_url": infra.database_url}))
    return stack
