"""Claim check for the patient log: a stored event too large for one message is kept in an object store.

The contracts bound what mtm accepts in characters, so a valid decision (a review documented at length in
multi-byte text) can outgrow the server's `max_payload` once sealed. Such an event's stored form (sealed, when
sealing is on) goes to the object store `PATIENT_EVENT_BODIES` first, and the log gets a small reference in its
place, with the event's usual headers (message id, expected sequence), so deduplication and optimistic concurrency
work as for any event. A crash between the two leaves an object no log entry names, never an entry naming nothing.

The object is named by the event id and the SHA-256 of the stored form. Sealing draws a fresh nonce each time, so
a retried append or relay stores other bytes: they go to another object, and the one the log's entry (the first
that reached the log; the server drops later ones by message id) names is never replaced. A re-decided command
with the same event id likewise never reuses an earlier decision's body.

Wire form of a reference: `mtm-stored-body/v1 ` and then a JSON object with `bucket`, `object`, `size` and
`sha256`. No clear or sealed event begins like that (both are JSON objects, starting with `{`). Every reader
(`mtm.platform.reading.EventReader`) resolves references before it opens an event, and checks size and digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js.api import ObjectMeta, ObjectMetaOptions
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from mtm.contracts.subjects import PATIENT_EVENT_BODIES_BUCKET
from mtm.platform.direct import DirectGetFailed, direct_batch

REFERENCE_MARKER = b"mtm-stored-body/v1 "
# A reference is a few hundred bytes; anything longer after the marker is not one.
MAX_REFERENCE_BYTES = 1024
# What one stored event may take in the object store. The largest valid input is a few megabytes sealed even in
# four-byte characters; a body far past that is a fault of the code that decided it, kept out of the log.
MAX_STORED_BODY_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 128 * 1024
CHUNK_HEADROOM = 4 * 1024
# Chunks per direct-get batch (the object store writes 128 KiB chunks).
CHUNK_BATCH = 64


class StoredBodyMissing(Exception):
    """The object store does not give back, intact, the body a log entry references.

    The log's writers store the body before they append its reference, so this is damage to the store (or the
    store away), never the message's fault: readers hold the event and try again, as in an outage
    (`mtm.platform.faults.TRANSIENT`).
    """


class MalformedReference(ValueError):
    """A body that starts like a reference but is not one: the message's fault, parked with this reason."""


@dataclass(frozen=True)
class BodyReference:
    """Where a stored event's body is, and what it must be: its size and SHA-256."""

    bucket: str
    object: str
    size: int
    sha256: str

    def encode(self) -> bytes:
        fields = {"bucket": self.bucket, "object": self.object, "size": self.size, "sha256": self.sha256}
        return REFERENCE_MARKER + json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def of(cls, body: bytes) -> BodyReference | None:
        """The reference a stored body is, or None for an event stored whole (clear or sealed)."""
        if not body.startswith(REFERENCE_MARKER):
            return None
        raw = body[len(REFERENCE_MARKER) :]
        try:
            if len(raw) > MAX_REFERENCE_BYTES:
                raise ValueError("too long")
            fields = json.loads(raw)
            found = cls(bucket=fields["bucket"], object=fields["object"], size=fields["size"], sha256=fields["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedReference(f"stored body reference: not readable ({type(exc).__name__})") from None
        if not (
            isinstance(found.bucket, str)
            and isinstance(found.object, str)
            and isinstance(found.size, int)
            and isinstance(found.sha256, str)
            and len(found.sha256) == 64
        ):
            raise MalformedReference("stored body reference: bucket, object, size or sha256 of the wrong type")
        return found


def is_reference(body: bytes) -> bool:
    return body.startswith(REFERENCE_MARKER)


def object_name(event_id: str, digest: str) -> str:
    return f"{event_id}.{digest}"


class EventBodies:
    """The patient log's object store of bodies too large for one message: store before the append, fetch on read.

    Bodies are written with nats-py's object store (chunks, then the object's metadata) and read back with direct
    gets (the metadata, then the chunks by subject), which need no consumer on the bucket and cannot wait for ever
    on chunks that are gone.
    """

    def __init__(self, nc: Client, bucket: str = PATIENT_EVENT_BODIES_BUCKET) -> None:
        self._nc = nc
        self._bucket = bucket
        self._stream = f"OBJ_{bucket}"
        self._store: ObjectStore | None = None

    async def store(self, event_id: str, body: bytes) -> bytes:
        """Keep `body` (the event as the log would store it) and return the reference to append in its place.

        Nothing is written when the object is there already: its name holds the digest, so it holds these bytes.
        """
        digest = hashlib.sha256(body).hexdigest()
        name = object_name(event_id, digest)
        if await self._meta(name) is None:
            if self._store is None:
                self._store = await self._nc.jetstream().object_store(self._bucket)
            # Chunks of the object store's usual size, or smaller on a server whose messages are (a test's).
            chunk = min(CHUNK_BYTES, self._nc.max_payload - CHUNK_HEADROOM)
            await self._store.put(name, body, ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=chunk)))
        return BodyReference(self._bucket, name, len(body), digest).encode()

    async def fetch(self, reference: BodyReference) -> bytes:
        """The body a reference names, checked against its size and digest; raises StoredBodyMissing."""
        if reference.bucket != self._bucket:
            raise MalformedReference(f"stored body reference: bucket {reference.bucket!r} is not the log's")
        meta = await self._meta(reference.object)
        if meta is None or meta.get("deleted") or not meta.get("nuid"):
            raise StoredBodyMissing("stored body: no such object")
        data = await self._chunks(f"$O.{self._bucket}.C.{meta['nuid']}", reference.size)
        if len(data) != reference.size or hashlib.sha256(data).hexdigest() != reference.sha256:
            raise StoredBodyMissing("stored body does not match the size and digest its reference names")
        return data

    async def _meta(self, name: str) -> dict[str, object] | None:
        encoded = base64.urlsafe_b64encode(name.encode()).decode()
        try:
            raw = await self._nc.jetstream().get_last_msg(self._stream, f"$O.{self._bucket}.M.{encoded}", direct=True)
        except NotFoundError:
            return None
        try:
            meta = json.loads(raw.data or b"")
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    async def _chunks(self, subject: str, size: int) -> bytes:
        """The chunks on `subject` in order, with direct gets of up to `CHUNK_BATCH` at a time."""
        data = bytearray()
        start = 1
        while len(data) <= size:
            try:
                batch, done = await direct_batch(self._nc, self._stream, subject, start, CHUNK_BATCH)
            except DirectGetFailed as exc:
                raise StoredBodyMissing(f"stored body: {exc}") from exc
            for seq, _, chunk, _ in batch:
                data += chunk
                start = seq + 1
            if not batch or done:
                break
        return bytes(data)
