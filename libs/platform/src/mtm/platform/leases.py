"""Exclusive ownership of consumer groups across replicas, held as Postgres advisory locks on one connection."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from mtm.platform.logging import get_logger

log = get_logger(__name__)

TRY_LOCK = "SELECT pg_try_advisory_lock($1::int, $2::int)"
# Two-key advisory locks show up in pg_locks with objsubid = 2.
HELD_GROUPS = """
SELECT objid::int AS grp FROM pg_locks
WHERE locktype = 'advisory' AND objsubid = 2 AND granted AND classid = ($1::int)::oid
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
CHECK_EVERY_S = 1.0
# A lease round that cannot reach Postgres within this long counts the session as lost: the groups stop before
# another replica may take them over (`takeover_after_s` is well above it).
SESSION_CHECK_TIMEOUT_S = 2.0
STILL_CONNECTED = "SELECT 1"


def lock_namespace(consumer: str) -> int:
    """A stable 31-bit key per consumer, so its groups' locks never collide with another consumer's."""
    return zlib.crc32(consumer.encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class GroupKey:
    consumer: str
    group: int
    groups: int

    @property
    def lock(self) -> tuple[int, int]:
        return lock_namespace(self.consumer), self.group


Start = Callable[[GroupKey], Awaitable[None]]
Stop = Callable[[GroupKey], Awaitable[None]]


class GroupLeases:
    """Takes the groups this replica prefers at once, and others once they stayed unowned for a while.

    A replica prefers groups `g` with `g % replicas == replica_index`; a group whose owner died is taken over
    by a live replica after `takeover_after_s`, so every group always has exactly one consumer. Losing the lease
    connection stops every group it held before anything else can take them.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        keys: list[GroupKey],
        *,
        replicas: int,
        replica_index: int,
        takeover_after_s: float,
        start: Start,
        stop: Stop,
    ) -> None:
        self._connect = connect
        self._keys = keys
        self._replicas = replicas
        self._index = replica_index
        self._takeover_after_s = takeover_after_s
        self._start = start
        self._stop = stop
        self._held: set[GroupKey] = set()
        self._unowned_since: dict[GroupKey, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._first_round = asyncio.Event()
        self.sessions_lost = 0

    @property
    def held(self) -> frozenset[GroupKey]:
        return frozenset(self._held)

    def preferred(self, key: GroupKey) -> bool:
        return key.group % self._replicas == self._index

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-leases")

    async def wait_first_round(self, timeout_s: float = 30.0) -> None:
        """Until the groups this replica prefers are taken (or the first attempt failed)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_round.wait(), timeout_s)

    async def stop(self) -> None:
        """Stop consuming first, then let the locks go, so no other replica starts while a batch is in hand."""
        self._stopping = True
        await self._release_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        # Ends when stopping, not only when cancelled: a cancellation can be lost on its way in (Python 3.11's
        # `wait_for` returns an inner result that was ready and drops the cancellation), and `stop` would then wait
        # for this loop for ever. A test run hung so: its service's stop waited on this task, cancelled yet asleep in
        # its next round.
        while not self._stopping:
            conn = None
            try:
                conn = await self._connect()
                while not self._stopping:
                    # The locks live as long as this session; a session that no longer answers may already be
                    # gone on the server's side, and its groups free for another replica.
                    await asyncio.wait_for(conn.fetchval(STILL_CONNECTED), SESSION_CHECK_TIMEOUT_S)
                    await self._round(conn)
                    self._first_round.set()
                    await asyncio.sleep(CHECK_EVERY_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease session lost; stopping owned groups", error_type=type(exc).__name__)
                self.sessions_lost += 1
                self._first_round.set()
                await self._release_all()
                await asyncio.sleep(CHECK_EVERY_S)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), SESSION_CHECK_TIMEOUT_S)

    async def _round(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        owned_elsewhere: dict[str, set[int]] = {}
        for key in self._keys:
            if self._stopping:
                return
            if key in self._held:
                continue
            if not self.preferred(key):
                if key.consumer not in owned_elsewhere:
                    rows = await conn.fetch(HELD_GROUPS, lock_namespace(key.consumer))
                    owned_elsewhere[key.consumer] = {row["grp"] for row in rows}
                if key.group in owned_elsewhere[key.consumer]:
                    self._unowned_since.pop(key, None)
                    continue
                first_seen = self._unowned_since.setdefault(key, now)
                if now - first_seen < self._takeover_after_s:
                    continue
            if await conn.fetchval(TRY_LOCK, *key.lock):
                self._held.add(key)
                self._unowned_since.pop(key, None)
                log.info("consumer group acquired", consumer=key.consumer, group=key.group, groups=key.groups)
                await self._start(key)

    async def _release_all(self) -> None:
        for key in list(self._held):
            await self._stop(key)
            self._held.discard(key)
