"""A database of its own for one test, on the shared Postgres."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from mtm.platform.db import ensure_database
from mtm.platform.settings import with_database


def fresh_database_url(infra, prefix: str) -> str:
    """The URL of a database no other test uses (`create_pool` and `fresh_connection` create it)."""
    return with_database(infra.database_url, f"{prefix}_{uuid.uuid4().hex[:8]}")


@asynccontextmanager
async def fresh_connection(infra, prefix: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database."""
    url = fresh_database_url(infra, prefix)
    await ensure_database(url)
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()
