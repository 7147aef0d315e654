"""A service pool plans each statement for its arguments, so a plan made while a table was young is not kept."""

from __future__ import annotations

import pytest
from support.database import fresh_database_url

from mtm.platform.db import create_pool

pytestmark = pytest.mark.integration

YOUNG_ROWS = 10
GROWN_ROWS = 50_000


async def test_a_statement_prepared_on_a_young_table_is_planned_again_once_the_table_has_grown(infra):
    pool = await create_pool(fresh_database_url(infra, "t_plans"))
    try:
        async with pool.acquire() as conn:
            # Autovacuum off: its next ANALYZE would invalidate the cached plan. It comes only once the table has grown
            # by a fifth, and up to a minute after; a fresh deployment's first minutes would run on the young plan.
            await conn.execute(
                "CREATE TABLE lists (patient_id bigint PRIMARY KEY, body text) WITH (autovacuum_enabled = false)"
            )
            await conn.execute(
                "INSERT INTO lists SELECT n, repeat('x', 200) FROM generate_series(1, $1::int) AS n", YOUNG_ROWS
            )
            await conn.execute("ANALYZE lists")  # what autovacuum does to a young table soon after its first rows
            await conn.execute("PREPARE batch_lookup(bigint[]) AS SELECT body FROM lists WHERE patient_id = ANY($1)")
            # Postgres considers a cached generic plan after the fifth execution of a prepared statement.
            for _ in range(8):
                await conn.execute("EXECUTE batch_lookup('{1,2,3}')")
            await conn.execute(
                "INSERT INTO lists SELECT n, repeat('x', 200) FROM generate_series($1::int, $2::int) AS n",
                YOUNG_ROWS + 1,
                GROWN_ROWS,
            )
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN EXECUTE batch_lookup('{1,2,3}')"))
    finally:
        await pool.close()
    assert "Index" in plan, plan
    assert "Seq Scan" not in plan, plan
