"""Postgres: create the service's database if missing, open the pool, apply numbered SQL migrations."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from importlib.resources.abc import Traversable
from urllib.parse import urlsplit

import asyncpg

from mtm.platform.logging import get_logger
from mtm.platform.settings import with_database

log = get_logger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
_SAFE_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
MIGRATIONS_LOCK_KEY = 7_320_001

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    scope      text        NOT NULL,
    version    text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, version)
)
"""
SELECT_APPLIED = "SELECT version FROM public.schema_migrations WHERE scope = $1"
INSERT_APPLIED = "INSERT INTO public.schema_migrations (scope, version) VALUES ($1, $2)"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


async def ensure_database(url: str, *, attempts: int = 30) -> None:
    """Create the database named in `url` when it does not exist.

    A role that owns only its database (no CREATEDB, no access to the `postgres` database) finds it there and
    needs nothing more. Creating it takes CREATEDB; a database created here is closed to every other role
    (`REVOKE CONNECT … FROM PUBLIC`), as a provisioned one is.
    """
    name = urlsplit(url).path.lstrip("/")
    if not _SAFE_DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_SAFE_DB_NAME.pattern}")
    try:
        await (await _connect_with_retry(url, attempts=attempts)).close()
        return
    except asyncpg.InvalidCatalogNameError:
        pass  # no such database yet
    admin_url = with_database(url, "postgres")
    conn = await _connect_with_retry(admin_url, attempts=attempts)
    try:
        if not await conn.fetchval(DATABASE_EXISTS, name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                await conn.execute(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
                log.info("database created", database=name)
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                # A replica starting at the same moment created it (two concurrent CREATE DATABASE of one name
                # can also fail on the catalogue's unique index rather than with "already exists").
                pass
    finally:
        await conn.close()


async def _connect_with_retry(url: str, *, attempts: int) -> asyncpg.Connection:
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError):
            if attempt == attempts:
                raise
            await asyncio.sleep(min(0.2 * attempt, 2.0))
    raise AssertionError("unreachable")


# Every statement is planned for the arguments it runs with. The hot statements run once per batch with arrays of
# ids, so planning costs a fraction of a millisecond per batch; a cached generic plan, made once while a table is
# still young (a fresh deployment, a rebuilt projection) and kept until the next ANALYZE, seq-scanned growing tables
# on every batch (the outbox relay walked every dead row of the outbox each round). Measured on the bench's end-to-end
# phase: Postgres CPU per discharge 0.83-1.03 ms with cached plans, 0.57-0.59 ms with this.
PLAN_CACHE_MODE = "force_custom_plan"


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 4, search_path: str | None = None
) -> asyncpg.Pool:
    """A pool on the service's database; `search_path` puts the live projection schema before `public`."""
    await ensure_database(url)
    settings = {"plan_cache_mode": PLAN_CACHE_MODE}
    if search_path:
        settings["search_path"] = search_path
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, command_timeout=60, server_settings=settings
    )
    assert pool is not None
    return pool


def migration_files(folder: Traversable) -> list[tuple[str, str]]:
    """(version, sql) of every `NNN_name.sql` in the folder, in order."""
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda item: int(_MIGRATION_NAME.match(item[0] + ".sql").group(1)))  # type: ignore[union-attr]


CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS projection_migrations (
    scope   text NOT NULL,
    version text NOT NULL,
    PRIMARY KEY (scope, version)
)
"""
SELECT_SCHEMA_APPLIED = "SELECT version FROM projection_migrations WHERE scope = $1"
INSERT_SCHEMA_APPLIED = "INSERT INTO projection_migrations (scope, version) VALUES ($1, $2)"


async def apply_schema_migrations(
    conn: asyncpg.Connection, schema: str, scopes: Iterable[tuple[str, Traversable]]
) -> list[str]:
    """Create `schema` if needed and apply numbered SQL files inside it, in the caller's transaction.

    The files name tables without a schema; `search_path` points them at `schema`, so the same files build
    the live projection and a rebuild's fresh one. What was applied is recorded inside the schema itself,
    so it travels with the tables when a rebuilt schema is swapped in.
    """
    if not _SAFE_DB_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} must match {_SAFE_DB_NAME.pattern}")
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
    await conn.execute(CREATE_SCHEMA_MIGRATIONS)
    applied_now: list[str] = []
    for scope, folder in scopes:
        done = {row["version"] for row in await conn.fetch(SELECT_SCHEMA_APPLIED, scope)}
        for version, sql in migration_files(folder):
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(INSERT_SCHEMA_APPLIED, scope, version)
            applied_now.append(f"{schema}:{scope}/{version}")
    return applied_now


async def apply_migrations(
    pool: asyncpg.Pool,
    scopes: Iterable[tuple[str, Traversable]],
    schemas: Iterable[tuple[str, Sequence[tuple[str, Traversable]]]] = (),
) -> list[str]:
    """Apply unapplied migrations, each in its own transaction, under an advisory lock.

    `scopes` go to `public` (the service's own bookkeeping: outbox, leases); `schemas` are (schema, scopes)
    pairs for tables that live in a schema of their own, such as the live projection.
    """
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_KEY)
        try:
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            for scope, folder in scopes:
                done = {row["version"] for row in await conn.fetch(SELECT_APPLIED, scope)}
                for version, sql in migration_files(folder):
                    if version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute("SET LOCAL search_path TO public")
                        await conn.execute(sql)
                        await conn.execute(INSERT_APPLIED, scope, version)
                    applied_now.append(f"{scope}/{version}")
                    log.info("migration applied", migration=f"{scope}/{version}")
            for schema, schema_scopes in schemas:
                async with conn.transaction():
                    for name in await apply_schema_migrations(conn, schema, schema_scopes):
                        applied_now.append(name)
                        log.info("migration applied", migration=name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY)
    return applied_now
