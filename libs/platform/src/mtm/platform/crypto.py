"""Crypto-shredding: each patient's events are sealed with the patient's own key, so destroying it erases them.

The log is append-only and must stay so; erasure therefore works on keys. Every patient event is written with its
`data` encrypted (AES-256-GCM, the event id as associated data) under the patient's key; the envelope (ids, times,
the pseudonymous patient reference) stays in the clear for routing. Reconciliation keeps the keys, each wrapped
with a key-encryption key from its settings (a KMS hook would unwrap them instead), and answers other services'
requests for them; every service caches what it was given. Erasing a patient destroys the key and publishes
`PatientErased` in the clear: from then on every reader skips the patient's events (their data can no longer be
opened, and readers consult the erased list for events written before sealing existed), and every projection
deletes the patient's rows.

Wire form of a sealed event: the event's JSON without `data`, ending in `"datakey":"<key id>","data_base64":"<b64
of nonce + ciphertext>"}` (CloudEvents' `data_base64`). Readers accept sealed and clear events alike.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mtm.contracts import EventEnvelope

SEAL_MARKER = b',"datakey":"'
DATA_BASE64_FIELD = b'","data_base64":"'
DATA_FIELD = b',"data":'
NONCE_BYTES = 12
KEY_BYTES = 32
# Keys a service keeps in memory; a patient whose key was dropped is fetched again (one request per batch).
KEY_CACHE_SIZE = 200_000


class ErasedPatient(Exception):
    """The patient was erased: the event is skipped, never parked (there is nothing wrong with the message)."""


class Unreadable(ValueError):
    """A sealed body that cannot be opened with the patient's key (tampered, or not ours): parked with this reason."""


# Slotted and without its cipher: a service caches up to KEY_CACHE_SIZE of these. An AESGCM object keeps OpenSSL
# contexts of about 2.4 KB once used; cached per key, it was a third of reconciliation's and review's resident
# memory after 30,000 patients, while making one per seal or open costs under a microsecond.
@dataclass(frozen=True, slots=True)
class PatientKey:
    key_id: str
    key: bytes

    @classmethod
    def new(cls) -> PatientKey:
        return cls(key_id=uuid.uuid4().hex, key=AESGCM.generate_key(bit_length=KEY_BYTES * 8))

    @property
    def cipher(self) -> AESGCM:
        return AESGCM(self.key)


def seal(clear_json: bytes, event_id: uuid.UUID, key: PatientKey) -> bytes:
    """The event as the log stores it: the envelope in the clear, `data` encrypted under the patient's key.

    `clear_json` is the event as pydantic writes it, `data` last (the envelope declares it last); the first
    `,"data":` is therefore the event's own (inside a string it would be escaped).
    """
    at = clear_json.find(DATA_FIELD)
    if at < 0 or not clear_json.endswith(b"}"):
        raise ValueError("an event's JSON must end with its data")
    data_json = clear_json[at + len(DATA_FIELD) : -1]
    nonce = os.urandom(NONCE_BYTES)
    sealed = key.cipher.encrypt(nonce, data_json, str(event_id).encode())
    blob = base64.b64encode(nonce + sealed)
    return clear_json[:at] + SEAL_MARKER + key.key_id.encode() + b'","data_base64":"' + blob + b'"}'


def sealed_key_id(body: bytes) -> str | None:
    """The key id a sealed body names, or None for an event written in the clear."""
    at = body.rfind(SEAL_MARKER)
    if at < 0:
        return None
    end = body.find(b'"', at + len(SEAL_MARKER))
    return body[at + len(SEAL_MARKER) : end].decode("ascii", "replace") if end > 0 else None


def unseal(body: bytes, key: PatientKey) -> bytes:
    """The event's JSON with its `data` in the clear again (the bytes a contract parses)."""
    at = body.rfind(SEAL_MARKER)
    try:
        raw = base64.b64decode(_data_base64(body, at), validate=True)
        # Written by `seal`, the envelope starts with the event id; anything else is parsed to find it.
        event_id = body[7:43] if body.startswith(b'{"id":"') else str(json.loads(body[:at] + b"}")["id"]).encode()
        data = key.cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], event_id)
    except (InvalidTag, ValueError, KeyError, TypeError) as exc:
        raise Unreadable(f"data_base64: cannot be opened with the patient's key ({type(exc).__name__})") from None
    return body[:at] + DATA_FIELD + data + b"}"


def _data_base64(body: bytes, at: int) -> str | bytes:
    """The sealed data of the tail `seal` writes, read without a JSON parser; any other tail is parsed as JSON."""
    start = body.find(DATA_BASE64_FIELD, at + len(SEAL_MARKER))
    if start > 0 and body.endswith(b'"}'):
        blob = body[start + len(DATA_BASE64_FIELD) : -2]
        # An escape would mean something else in JSON than in these bytes.
        if b"\\" not in blob and b'"' not in blob:
            return blob
    return json.loads(b"{" + body[at + 1 :])["data_base64"]


KeySource = Callable[[Sequence[str], bool], Awaitable[tuple[dict[str, PatientKey], set[str]]]]
"""(patient ids, create) → (keys found or made, patients erased)."""


class KeyRing:
    """The patient keys a service holds: cached, fetched a batch at a time, forgotten on erasure."""

    def __init__(self, source: KeySource, *, capacity: int = KEY_CACHE_SIZE) -> None:
        self._source = source
        self._capacity = capacity
        self._keys: OrderedDict[str, PatientKey] = OrderedDict()
        self._erased: set[str] = set()

    async def prepare(self, patient_ids: Iterable[str], *, create: bool = False) -> None:
        """Fetch what is not cached for these patients, in one request."""
        wanted = sorted({p for p in patient_ids if p not in self._keys and p not in self._erased})
        if not wanted:
            return
        keys, erased = await self._source(wanted, create)
        self._erased |= erased
        for patient_id, key in keys.items():
            self._remember(patient_id, key)

    def _remember(self, patient_id: str, key: PatientKey) -> None:
        self._keys[patient_id] = key
        self._keys.move_to_end(patient_id)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def learn(self, keys: dict[str, PatientKey]) -> None:
        """Keys the keeper announced it made: cached as if fetched, except an erased patient's (an announcement
        can arrive after the erasure it preceded)."""
        for patient_id, key in keys.items():
            if patient_id not in self._erased:
                self._remember(patient_id, key)

    def erased(self, patient_id: str) -> bool:
        return patient_id in self._erased

    def forget(self, patient_id: str) -> None:
        """After `PatientErased`: the key is gone everywhere."""
        self._keys.pop(patient_id, None)
        self._erased.add(patient_id)

    async def key(self, patient_id: str, *, create: bool = False) -> PatientKey | None:
        if patient_id not in self._keys:
            await self.prepare([patient_id], create=create)
        return self._keys.get(patient_id)

    async def open(self, patient_id: str, body: bytes) -> bytes:
        """The clear JSON of a stored event; raises ErasedPatient or Unreadable."""
        if self.erased(patient_id):
            raise ErasedPatient(patient_id)
        key_id = sealed_key_id(body)
        if key_id is None:
            return body
        key = await self.key(patient_id)
        if key is None:
            if self.erased(patient_id):
                raise ErasedPatient(patient_id)
            raise Unreadable("datakey: no key for this patient")
        if key.key_id != key_id:
            raise Unreadable("datakey: not the patient's key")
        return unseal(body, key)

    async def close(self, event: EventEnvelope, clear_json: str) -> bytes | None:
        """The stored form of a new event: sealed when its class is; None when the patient was erased."""
        if not event.SEALED:
            return clear_json.encode()
        key = await self.key(event.patient_id, create=True)
        if key is None:
            return None
        return seal(clear_json.encode(), event.id, key)


class Sealer:
    """Seals outgoing events (the outbox relay's rows) with their patients' keys, a batch's keys in one request."""

    def __init__(self, keyring: KeyRing, sealed: Callable[[str], bool]) -> None:
        self._keyring = keyring
        self._sealed = sealed

    async def prepare(self, subjects: Iterable[str]) -> None:
        await self._keyring.prepare((patient_of(s) for s in subjects if self._sealed(s)), create=True)

    async def seal(self, subject: str, clear_json: bytes) -> bytes | None:
        """The stored form of an event given as its subject and clear JSON; None when its patient was erased."""
        if not self._sealed(subject):
            return clear_json
        key = await self._keyring.key(patient_of(subject), create=True)
        if key is None:
            return None
        return seal(clear_json, uuid.UUID(clear_json[7:43].decode()), key)


def patient_of(subject: str) -> str:
    from mtm.contracts.subjects import patient_of_subject

    return patient_of_subject(subject)


def wrap(key: PatientKey, kek: bytes) -> bytes:
    """A patient key encrypted with the key-encryption key, for storage."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + _kek_cipher(kek).encrypt(nonce, key.key, key.key_id.encode())


def unwrap(key_id: str, wrapped: bytes, kek: bytes) -> PatientKey:
    return PatientKey(key_id, _kek_cipher(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], key_id.encode()))


@functools.lru_cache(maxsize=4)
def _kek_cipher(kek: bytes) -> AESGCM:
    # A process has one key-encryption key (two while it is rotated); a batch of new patients wraps hundreds of keys.
    return AESGCM(kek)
