"""Where NATS and Postgres come from: the environment, else testcontainers when Docker answers, else embedded.

The embedded servers are the secured stack: NATS with a user per service, tool and integrator (TLS only), Postgres
with SCRAM passwords over TLS and a role per service that owns only its database. Servers from the environment
or from containers are used as they are: clients take `MTM_NATS_USER`/`MTM_NATS_PASSWORD`/`MTM_NATS_TLS_CA` from
the environment, and services create their databases with the URL's role.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import asyncpg

from mtm.devstack.embedded import EmbeddedNats, EmbeddedPostgres
from mtm.devstack.security import LocalSecurity
from mtm.platform.access import ADMIN
from mtm.platform.connection import NatsClient
from mtm.platform.logging import get_logger
from mtm.platform.settings import NatsSettings, with_database

log = get_logger(__name__)

NATS_IMAGE = "nats:2.11-alpine"
POSTGRES_IMAGE = "postgres:16-alpine"
Origin = Literal["environment", "testcontainers", "embedded"]
T = TypeVar("T")


def run_blocking(work: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run a coroutine to completion from synchronous code, whether or not an event loop runs in this thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


def role_of(service: str) -> str:
    """The Postgres role a service connects as."""
    return f"mtm_{service}"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


DATABASE_OWNER = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1"
# What a database made before roles existed holds that its service's role must own: schemas and tables (a table's
# sequences go with it).
FOREIGN_OBJECTS = """
SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, $1::text) FROM pg_namespace
WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' AND pg_get_userbyid(nspowner) <> $1::text
UNION ALL
SELECT format('ALTER TABLE %I.%I OWNER TO %I', n.nspname, c.relname, $1::text)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND pg_get_userbyid(c.relowner) <> $1::text
"""


async def provision_database(admin_url: str, role: str, password: str, database: str) -> None:
    """The role (login, password, nothing more) and its database, owned by it and closed to every other role.

    A database an older mtm made as the superuser is handed over to the role, with everything in it.
    """
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            # Two processes provisioning at once: the loser may also fail on the catalogue's unique index.
            with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await conn.execute(
                    f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {_literal(password)}'
                )
        owner = await conn.fetchval(DATABASE_OWNER, database)
        if owner is None:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{database}" OWNER "{role}"')
        elif owner != role:
            await conn.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
            await _hand_over(with_database(admin_url, database), role)
        await conn.execute(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    finally:
        await conn.close()


async def _hand_over(admin_url: str, role: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        async with conn.transaction():
            for statement in [row[0] for row in await conn.fetch(FOREIGN_OBJECTS, role)]:
                await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Infrastructure:
    nats_url: str
    database_url: str
    nats_origin: Origin
    database_origin: Origin
    security: LocalSecurity | None = None
    """The stack's secrets when the servers are the embedded, secured ones."""
    nats_server: EmbeddedNats | None = None
    postgres: EmbeddedPostgres | None = None
    postgres_tls: bool = True
    """Services reach the embedded Postgres over TLS; the bench alone turns it off (see `EmbeddedPostgres.url_for`)."""
    _stops: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _provisioned: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @property
    def secured(self) -> bool:
        return self.nats_server is not None and self.postgres is not None

    def nats_client(self, user: str = ADMIN) -> NatsClient:
        """How `user` connects: its own credentials on the embedded server, the environment's otherwise."""
        if self.nats_server is not None:
            return self.nats_server.client(user)
        return NatsSettings(nats_url=self.nats_url).nats()

    def nats_settings(self, user: str) -> dict[str, object]:
        """`ServiceSettings` fields for `user`'s connection."""
        client = self.nats_client(user)
        return {
            "nats_url": client.url,
            "nats_user": client.user,
            "nats_password": client.password,
            "nats_tls_ca": client.tls_ca,
            "nats_tls_cert": client.tls_cert,
            "nats_tls_key": client.tls_key,
        }

    def service_database(self, service: str, database: str) -> str:
        """The URL `service` reaches `database` with: as its own role on the embedded server (provisioned here,
        owning only its databases), with the environment's URL otherwise (the service creates the database)."""
        if self.postgres is None or self.security is None:
            return with_database(self.database_url, database)
        role = role_of(service)
        password = self.security.postgres_password(role)
        if (role, database) not in self._provisioned:
            run_blocking(lambda: provision_database(self.database_url, role, password, database))
            self._provisioned.add((role, database))
        return self.postgres.url_for(role, password, database, tls=self.postgres_tls)

    def service_env(self, service: str, database: str) -> dict[str, str]:
        """Environment of a service process: its NATS user and its database, nothing of anyone else's."""
        env = {f"MTM_{service.upper()}_DATABASE_URL": self.service_database(service, database)}
        if self.postgres is None:
            env["MTM_DATABASE_URL"] = self.database_url
        client = self.nats_client(service)
        env["MTM_NATS_URL"] = client.url
        for name, value in (
            ("MTM_NATS_USER", client.user),
            ("MTM_NATS_PASSWORD", client.password.get_secret_value() if client.password else None),
            ("MTM_NATS_TLS_CA", client.tls_ca),
        ):
            if value is not None:
                env[name] = value
        return env

    def stop(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
        self._stops.clear()


def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def resolve_infrastructure(data_dir: Path, *, use_containers: bool = True) -> Infrastructure:
    """Resolve each of NATS and Postgres independently in the order environment → containers → embedded."""
    nats_url = os.environ.get("MTM_NATS_URL")
    database_url = os.environ.get("MTM_DATABASE_URL")
    infra = Infrastructure(
        nats_url=nats_url or "",
        database_url=database_url or "",
        nats_origin="environment",
        database_origin="environment",
    )
    containers = use_containers and (nats_url is None or database_url is None) and docker_engine_answers()
    security = LocalSecurity(data_dir / "security")
    try:
        if nats_url is None:
            if containers:
                infra.nats_url, stop = _nats_container()
                infra.nats_origin = "testcontainers"
                infra._stops.append(stop)
            else:
                server = EmbeddedNats(data_dir / "nats", security)
                # Registered before it starts: an interrupted or failed start still stops what came up.
                infra._stops.append(server.stop)
                infra.nats_url = server.start().url
                infra.nats_origin = "embedded"
                infra.nats_server = server
                infra.security = security
        if database_url is None:
            if containers:
                infra.database_url, stop = _postgres_container()
                infra.database_origin = "testcontainers"
                infra._stops.append(stop)
            else:
                pg = EmbeddedPostgres(data_dir / "postgres", security)
                infra._stops.append(pg.stop)
                infra.database_url = pg.start().url
                infra.database_origin = "embedded"
                infra.postgres = pg
                infra.security = security
    except BaseException:
        infra.stop()
        raise
    return infra


def _nats_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.community.nats import NatsContainer

    container = NatsContainer(NATS_IMAGE, jetstream=True).start()
    return container.nats_uri(), container.stop


def _postgres_container() -> tuple[str, Callable[[], None]]:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres").start()
    return container.get_connection_url(driver=None), container.stop
