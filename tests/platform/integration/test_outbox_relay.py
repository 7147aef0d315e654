"""The outbox relay on real Postgres and JetStream: what a commit wakes it for is sent without waiting for its poll."""

from __future__ import annotations

import asyncio
from importlib.resources import files

import pytest
from nats.js.errors import NotFoundError
from support.database import fresh_database_url

from mtm.platform.db import apply_migrations, create_pool
from mtm.platform.outbox import OutboxRelay, OutgoingMessage, enqueue

pytestmark = pytest.mark.integration

STREAM = "RELAY_TEST"


async def test_a_row_committed_while_the_relay_sends_is_sent_at_once_not_at_the_next_poll(
    infra, clean_jetstream, monkeypatch
):
    js = clean_jetstream.jetstream()
    await js.add_stream(name=STREAM, subjects=["relaytest.>"])
    pool = await create_pool(fresh_database_url(infra, "t_relay"))
    await apply_migrations(pool, [("platform", files("mtm.platform") / "migrations")])
    async with pool.acquire() as conn:
        await enqueue(conn, [OutgoingMessage("relaytest.first", "first", b"1")])

    relay_once = OutboxRelay.relay_once
    rounds = 0

    async def a_consumer_commits_meanwhile(self: OutboxRelay) -> int:
        # The first round has read its rows when a consumer commits another and wakes the relay (its
        # after-commit hook), before the round is over.
        nonlocal rounds
        rounds += 1
        sent = await relay_once(self)
        if rounds == 1:
            async with pool.acquire() as conn:
                await enqueue(conn, [OutgoingMessage("relaytest.second", "second", b"2")])
            self.wake()
        return sent

    monkeypatch.setattr(OutboxRelay, "relay_once", a_consumer_commits_meanwhile)
    # A poll that never comes within the test: only the wake can get the second row out.
    relay = OutboxRelay(pool, js, poll_s=3600)
    relay.start()
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    second = await js.get_last_msg(STREAM, "relaytest.second")
                    break
                except NotFoundError:
                    await asyncio.sleep(0.05)
        assert second.data == b"2"
        assert (await js.get_last_msg(STREAM, "relaytest.first")).data == b"1"
    finally:
        await relay.stop()
        await pool.close()


async def test_a_row_is_marked_attempted_before_it_is_sent_and_one_attempted_long_ago_is_looked_up_first(
    infra, clean_jetstream
):
    js = clean_jetstream.jetstream()
    await js.add_stream(name=STREAM, subjects=["relaytest.>"])
    pool = await create_pool(fresh_database_url(infra, "t_relay"))
    await apply_migrations(pool, [("platform", files("mtm.platform") / "migrations")])
    looked_up: list[str] = []

    async def on_the_log(subject: str, msg_id: str) -> bool:
        looked_up.append(msg_id)
        return msg_id == "sent-before"

    relay = OutboxRelay(pool, js, poll_s=3600, stored=on_the_log, trust_dedup_s=60)
    try:
        # No stream takes this subject: the send fails, and the row stays, remembered as attempted.
        async with pool.acquire() as conn:
            await enqueue(conn, [OutgoingMessage("nostream.first", "first", b"1")])
        assert await relay.relay_once() == 0
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT attempted_at IS NOT NULL FROM outbox WHERE msg_id = 'first'")
            # Past the trusted part of the deduplication window, a row is looked up on the log before it is sent.
            await conn.execute("DELETE FROM outbox")
            await enqueue(
                conn,
                [
                    OutgoingMessage("relaytest.before", "sent-before", b"1"),
                    OutgoingMessage("relaytest.lost", "lost", b"2"),
                    OutgoingMessage("relaytest.new", "new", b"3"),
                ],
            )
            await conn.execute(
                "UPDATE outbox SET attempted_at = now() - interval '1 hour' WHERE msg_id IN ('sent-before', 'lost')"
            )
        assert await relay.relay_once() == 3
        assert sorted(looked_up) == ["lost", "sent-before"]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
        assert (await js.stream_info(STREAM)).state.messages == 2
        with pytest.raises(NotFoundError):
            await js.get_last_msg(STREAM, "relaytest.before")
    finally:
        await pool.close()


async def test_only_the_relays_own_writes_skip_the_wal_flush_and_its_connection_goes_back_as_it_came(
    infra, clean_jetstream
):
    js = clean_jetstream.jetstream()
    await js.add_stream(name=STREAM, subjects=["relaytest.>"])
    # One connection: the relay's lock connection is the pool's only one, so what it leaves behind is seen next.
    pool = await create_pool(fresh_database_url(infra, "t_relay_sync"), min_size=1, max_size=1)
    await apply_migrations(pool, [("platform", files("mtm.platform") / "migrations")])
    seen: list[str] = []
    noted = asyncio.Event()
    relay_once = OutboxRelay.relay_once

    async def noting_the_session(self: OutboxRelay) -> int:
        assert self._conn is not None
        seen.append(await self._conn.fetchval("SHOW synchronous_commit"))
        noted.set()
        return await relay_once(self)

    relay = OutboxRelay(pool, js, poll_s=3600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OutboxRelay, "relay_once", noting_the_session)
        relay.start()
        try:
            await asyncio.wait_for(noted.wait(), timeout=30)
        finally:
            await relay.stop()
    assert seen[0] == "off"
    async with pool.acquire() as conn:
        # A consumer's transaction on the same connection afterwards waits for the flush again.
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    await pool.close()
