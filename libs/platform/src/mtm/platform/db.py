"""Postgres: create the service's database if missing, open the pool, apply numbered SQL migrations."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
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
CREATE TABLE IF NOT EXISTS schema_migrations (
    scope      text        NOT NULL,
    version    text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, version)
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migrations WHERE scope = $1"
INSERT_APPLIED = "INSERT INTO schema_migrations (scope, version) VALUES ($1, $2)"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"


async def ensure_database(url: str, *, attempts: int = 30) -> None:
    """Create the database named in `url` when it does not exist (needs CREATEDB on the server)."""
    name = urlsplit(url).path.lstrip("/")
    if not _SAFE_DB_NAME.match(name):
        raise ValueError(f"database name {name!r} must match {_SAFE_DB_NAME.pattern}")
    admin_url = with_database(url, "postgres")
    conn = await _connect_with_retry(admin_url, attempts=attempts)
    try:
        if not await conn.fetchval(DATABASE_EXISTS, name):
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                log.info("database created", database=name)
            except asyncpg.DuplicateDatabaseError:
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


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    await ensure_database(url)
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=60)
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


async def apply_migrations(pool: asyncpg.Pool, scopes: Iterable[tuple[str, Traversable]]) -> list[str]:
    """Apply unapplied migrations scope by scope, each in its own transaction, under an advisory lock."""
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
                        await conn.execute(sql)
                        await conn.execute(INSERT_APPLIED, scope, version)
                    applied_now.append(f"{scope}/{version}")
                    log.info("migration applied", migration=f"{scope}/{version}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY)
    return applied_now
