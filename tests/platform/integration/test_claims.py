"""A projection's claims: a duplicate is still recognised, and the table keeps only the newest claims."""

from __future__ import annotations

import uuid

import pytest
from support.database import fresh_connection

from mtm.platform import projection
from mtm.platform.db import apply_schema_migrations
from mtm.platform.projection import claim, platform_projection_migrations

pytestmark = pytest.mark.integration


class _Event:
    """Only the id is claimed."""

    def __init__(self) -> None:
        self.id = uuid.uuid4()


@pytest.fixture
async def conn(infra):
    async with fresh_connection(infra, "t_claims") as connection:
        async with connection.transaction():
            await apply_schema_migrations(connection, "projection", [("platform", platform_projection_migrations())])
        await connection.execute("SET search_path TO projection, public")
        yield connection


async def test_the_newest_claims_are_kept_and_a_duplicate_among_them_changes_nothing(conn, monkeypatch):
    monkeypatch.setattr(projection, "CLAIMS_KEPT", 100)
    events = [_Event() for _ in range(1000)]
    for start in range(0, len(events), 50):
        batch = events[start : start + 50]
        assert await claim(conn, batch) == batch

    kept = {row["event_id"] for row in await conn.fetch("SELECT event_id FROM applied_events")}
    # The bound holds to within one batch, and what is kept is the newest.
    assert 100 <= len(kept) <= 150
    assert {e.id for e in events[-100:]} <= kept and not kept & {e.id for e in events[:800]}

    # A redelivery of recent events (and a duplicate inside one batch) claims nothing new.
    recent = events[-30:]
    assert await claim(conn, [*recent, recent[0]]) == []
    fresh = _Event()
    assert await claim(conn, [recent[1], fresh, fresh]) == [fresh]
