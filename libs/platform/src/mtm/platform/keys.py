"""Patients' event keys: kept (wrapped) by reconciliation, lent to the other services, destroyed on erasure."""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from mtm.contracts.admin import GetPatientKeys, PatientKeys
from mtm.contracts.admin import PatientKey as WirePatientKey
from mtm.contracts.subjects import PATIENT_KEYS, PATIENT_KEYS_MADE
from mtm.platform.crypto import KeyRing, KeySource, PatientKey, unwrap, wrap
from mtm.platform.logging import get_logger

log = get_logger(__name__)

# Joined with the ids rather than `patient_id = ANY($1)`: while the table's statistics lag its growth (a young
# table filling fast), the planner scanned it and compared every row with every id asked (15 % of the Postgres
# CPU of a bench run; a batch asks for a few hundred ids).
SELECT_KEYS = """
SELECT k.patient_id, k.key_id, k.wrapped
FROM unnest($1::text[]) AS asked(patient_id) JOIN patient_keys k USING (patient_id)
"""
SELECT_ERASED = """
SELECT e.patient_id FROM unnest($1::text[]) AS asked(patient_id) JOIN erased_patients e USING (patient_id)
"""
INSERT_KEYS = """
INSERT INTO patient_keys (patient_id, key_id, wrapped)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
ON CONFLICT (patient_id) DO NOTHING
RETURNING patient_id
"""
DESTROY_KEY = "DELETE FROM patient_keys WHERE patient_id = $1"
RECORD_ERASED = """
INSERT INTO erased_patients (patient_id, reason) VALUES ($1, $2) ON CONFLICT (patient_id) DO NOTHING RETURNING 1
"""
# The keeper answers in milliseconds; a request lost with a NATS server (the asker's or the keeper's connection
# moving to another node) is asked again after this, and every reader of sealed events waits for it meanwhile.
KEY_REQUEST_TIMEOUT_S = 5.0
# Keys the keeper made or read lately, unwrapped. Each new patient's key is asked for by every service that reads
# the patient's first events, right after the keeper made it; these answers then need no read of the key table.
KNOWN_KEYS = 20_000


class KeyStore:
    """The keeper's table of keys (wrapped with the key-encryption key) and of erased patients.

    A patient's key never changes once made (it is inserted once, and only deleted on erasure), so the keys the
    keeper made or read lately are kept in memory; whether a patient was erased is always read from the table,
    so an erasure by any replica of the keeper is answered at once, as before.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        kek: bytes,
        *,
        known: int = KNOWN_KEYS,
        announce: Callable[[dict[str, PatientKey]], Awaitable[None]] | None = None,
    ) -> None:
        self._pool = pool
        self._kek = kek
        self._known: OrderedDict[str, PatientKey] = OrderedDict()
        self._capacity = known
        self._announce = announce

    async def fetch(self, patient_ids: Sequence[str], create: bool) -> tuple[dict[str, PatientKey], set[str]]:
        # Every key was made for the patient id of an event a contract accepted, which Postgres can hold; an id it
        # cannot (a NUL, a lone surrogate) comes from a hostile subject or request and has no key. Asking the
        # table for it would fail the whole request, and with it every reader's batch that held that event.
        patient_ids = [p for p in patient_ids if storable(p)]
        if not patient_ids:
            return {}, set()
        async with self._pool.acquire() as conn:
            erased = {row["patient_id"] for row in await conn.fetch(SELECT_ERASED, list(patient_ids))}
            for patient_id in erased:
                self._known.pop(patient_id, None)
            keys = {p: self._known[p] for p in patient_ids if p in self._known and p not in erased}
            unknown = [p for p in patient_ids if p not in keys and p not in erased]
            if unknown:
                keys |= await self._load(conn, unknown)
            missing = [p for p in patient_ids if p not in keys and p not in erased]
            if create and missing:
                made = {p: PatientKey.new() for p in missing}
                rows = await conn.fetch(
                    INSERT_KEYS,
                    missing,
                    [made[p].key_id for p in missing],
                    [wrap(made[p], self._kek) for p in missing],
                )
                kept = {row["patient_id"]: made[row["patient_id"]] for row in rows}
                keys |= self._remember(kept)
                if kept and self._announce is not None:
                    await self._announce(kept)
                # Another replica may have made some of them first: what the table holds is the key.
                lost = [p for p in missing if p not in kept]
                if lost:
                    keys |= await self._load(conn, lost)
        return keys, erased

    async def _load(self, conn: asyncpg.Connection, patient_ids: Sequence[str]) -> dict[str, PatientKey]:
        rows = await conn.fetch(SELECT_KEYS, list(patient_ids))
        return self._remember({r["patient_id"]: unwrap(r["key_id"], bytes(r["wrapped"]), self._kek) for r in rows})

    def _remember(self, keys: dict[str, PatientKey]) -> dict[str, PatientKey]:
        """Keep `keys` among those known lately (the oldest let go past the capacity) and give them back."""
        for patient_id, key in keys.items():
            self._known[patient_id] = key
            self._known.move_to_end(patient_id)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        return keys

    async def erase(self, conn: asyncpg.Connection, patient_id: str, reason: str) -> bool:
        """Destroy the patient's key, in the caller's transaction; False when they were erased before."""
        self._known.pop(patient_id, None)
        await conn.execute(DESTROY_KEY, patient_id)
        return bool(await conn.fetchval(RECORD_ERASED, patient_id, reason))


def storable(text: str) -> bool:
    """Whether Postgres can hold the text (no NUL, valid UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def nats_key_source(nc: Client) -> KeySource:
    """How a service that does not keep keys gets them: one request to reconciliation per batch."""

    async def fetch(patient_ids: Sequence[str], create: bool) -> tuple[dict[str, PatientKey], set[str]]:
        request = GetPatientKeys(patient_ids=tuple(patient_ids), create=create)
        reply = await nc.request(PATIENT_KEYS, request.model_dump_json().encode(), timeout=KEY_REQUEST_TIMEOUT_S)
        answer = PatientKeys.model_validate_json(reply.data)
        return keys_of(answer), set(answer.erased)

    return fetch


async def announce_keys(nc: Client, keys: dict[str, PatientKey]) -> None:
    """The keeper announces keys it made: one core NATS message, never stored. An announcement lost (no
    connection) costs nothing but the request each reader then makes."""
    try:
        await nc.publish(PATIENT_KEYS_MADE, key_reply(keys, set(), ()).model_dump_json().encode())
    except Exception as exc:
        log.warning("keys made but not announced", count=len(keys), error_type=type(exc).__name__)


def announced_keys(body: bytes) -> dict[str, PatientKey]:
    """The keys of one announcement (the keeper's reply format)."""
    return keys_of(PatientKeys.model_validate_json(body))


async def hear_keys(nc: Client, keyring: KeyRing) -> Subscription:
    """Keep the keys the keeper announces in `keyring` (every reader but the keeper: the services, the web app's
    live updates) until the subscription returned is removed. An announcement that cannot be read is dropped and
    logged; the reader asks for those keys when it needs them, as without one."""

    async def learn(msg: Msg) -> None:
        try:
            keys = announced_keys(msg.data)
        except Exception as exc:
            log.warning("key announcement unreadable", error_type=type(exc).__name__)
            return
        keyring.learn(keys)

    return await nc.subscribe(PATIENT_KEYS_MADE, cb=learn)


def keys_of(answer: PatientKeys) -> dict[str, PatientKey]:
    """The keys a reply or an announcement carries, as the key ring keeps them."""
    return {p: PatientKey(k.key_id, base64.b64decode(k.key_base64)) for p, k in answer.keys.items()}


def key_reply(keys: dict[str, PatientKey], erased: set[str], asked: Sequence[str]) -> PatientKeys:
    return PatientKeys(
        keys={p: WirePatientKey(key_id=k.key_id, key_base64=base64.b64encode(k.key).decode()) for p, k in keys.items()},
        erased=tuple(sorted(erased)),
        missing=tuple(p for p in asked if p not in keys and p not in erased),
    )
