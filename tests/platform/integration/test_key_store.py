"""The keeper's key store on real Postgres: keys it keeps in memory are never answered for an erased patient."""

from __future__ import annotations

import os
import uuid
from importlib.resources import files

import pytest
from support.database import fresh_database_url

from mtm.platform.db import apply_migrations, create_pool
from mtm.platform.keys import KeyStore

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(infra):
    """A pool on a database of its own holding the keeper's tables."""
    pool = await create_pool(fresh_database_url(infra, "t_keys"))
    try:
        await apply_migrations(
            pool,
            [
                ("platform", files("mtm.platform") / "migrations"),
                ("keys", files("mtm.platform") / "migrations" / "keeper"),
            ],
        )
        yield pool
    finally:
        await pool.close()


async def test_a_key_the_keeper_remembers_is_not_answered_once_another_replica_erased_the_patient(pool):
    kek = os.urandom(32)
    # Two replicas of the keeper on one table: each remembers the keys it made or read.
    first, second = KeyStore(pool, kek), KeyStore(pool, kek)
    erased, kept = f"patient-{uuid.uuid4()}", f"patient-{uuid.uuid4()}"

    made, _ = await first.fetch([erased, kept], True)
    read, _ = await second.fetch([erased, kept], False)
    assert {p: k.key for p, k in read.items()} == {p: k.key for p, k in made.items()}

    async with pool.acquire() as conn, conn.transaction():
        assert await second.erase(conn, erased, "request of the patient")

    # The first replica still holds the key in memory; the table says the patient is gone, and that wins.
    keys, gone = await first.fetch([erased, kept], False)
    assert gone == {erased}
    assert set(keys) == {kept}
    assert keys[kept].key == made[kept].key
    # Asking with `create` makes no new key for them either.
    keys, gone = await first.fetch([erased], True)
    assert (keys, gone) == ({}, {erased})


async def test_a_key_the_keeper_made_is_answered_again_without_reading_the_key_table(pool, monkeypatch):
    """Every service reading a new patient's first events asks for the key the keeper has just made."""
    store = KeyStore(pool, os.urandom(32))
    patient = f"patient-{uuid.uuid4()}"
    made, _ = await store.fetch([patient], True)

    async def no_table_read(*_args):
        raise AssertionError("the key table was read for a key the keeper made")

    monkeypatch.setattr(store, "_load", no_table_read)
    again, gone = await store.fetch([patient], False)
    assert gone == set() and again[patient].key == made[patient].key


async def test_the_keeper_announces_the_keys_it_made_and_only_those(pool):
    announced: list[dict] = []

    async def announce(keys):
        announced.append(dict(keys))

    kek = os.urandom(32)
    first, second = KeyStore(pool, kek, announce=announce), KeyStore(pool, kek, announce=announce)
    patient, other = f"patient-{uuid.uuid4()}", f"patient-{uuid.uuid4()}"
    made, _ = await first.fetch([patient], True)
    # A key read, or made first by another replica, is not announced again.
    await second.fetch([patient, other], False)
    await second.fetch([patient], True)
    assert [{p: k.key for p, k in a.items()} for a in announced] == [{patient: made[patient].key}]
