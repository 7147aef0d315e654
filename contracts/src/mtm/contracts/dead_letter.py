"""A message a service could not process, parked with the reason instead of being dropped."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, Field

from mtm.contracts.envelope import Frozen
from mtm.contracts.subjects import DEAD_LETTER_PREFIX


def dead_letter_bucket(service: str) -> str:
    """The JetStream object store that keeps bodies too large to travel inside their dead letter."""
    return f"mtm-dead-letter-bodies-{service}"


class DeadLetter(Frozen):
    service: str
    consumer: str
    original_subject: str
    original_stream: str | None = None
    original_sequence: int | None = None
    original_headers: dict[str, str] = {}
    payload_base64: str = Field(
        default="", description="The original message body, byte for byte (empty when kept in the object store)."
    )
    payload_size: int | None = Field(default=None, ge=0, description="Size of the original body in bytes.")
    payload_sha256: str | None = Field(default=None, description="Hex SHA-256 of the original body.")
    payload_object: str | None = Field(
        default=None,
        description="Name of the body in the service's dead-letter object store (`dead_letter_bucket`), when the "
        "body was too large to travel inside the letter.",
    )
    reason: str = Field(description="What was wrong and where, e.g. `data.patient.birth_date: invalid date`.")
    deliveries: int = 1
    parked_at: AwareDatetime

    @classmethod
    def of(cls, *, payload: bytes, parked_at: datetime, **fields: object) -> DeadLetter:
        return cls(
            payload_base64=base64.b64encode(payload).decode("ascii"),
            payload_size=len(payload),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            parked_at=parked_at,
            **fields,
        )

    def without_body(self, object_name: str) -> DeadLetter:
        """The same letter pointing at its body in the object store instead of carrying it."""
        return self.model_copy(update={"payload_base64": "", "payload_object": object_name})

    @property
    def payload(self) -> bytes:
        """The body when the letter carries it (see `payload_object` otherwise)."""
        return base64.b64decode(self.payload_base64)


# --- reading and redriving dead letters (an admin's requests to the service that parked them) -------------------

MAX_REDRIVE_BODY = 700 * 1024
"""An edited body sent with `RedriveDeadLetter` (base64 in one request message of the default 1 MiB)."""
MAX_BODY_CHUNK = 512 * 1024


def dead_letters_subject(service: str, action: str) -> str:
    """Where one instance of `service` (queue group) answers an admin's `list`, `get` or `redrive`."""
    return f"mtm.admin.{service}.dead_letters.{action}.v1"


def redrive_record_subject(service: str, sequence: int) -> str:
    """Where a redrive of letter `sequence` is recorded, in the service's own dead-letter stream. Letters are
    `mtm.dlq.<service>.<consumer>` (four tokens), records five tokens: no filter confuses the two."""
    return f"{DEAD_LETTER_PREFIX}.{service}.redriven.{sequence}"


class ListDeadLetters(Frozen):
    """A page of the service's dead letters, oldest first, with their reasons: never their bodies."""

    after_sequence: int = Field(default=0, ge=0, description="Only letters after this stream sequence.")
    limit: int = Field(default=50, ge=1, le=200)
    schema_version: Literal[1] = 1


class GetDeadLetter(Frozen):
    """One dead letter with (a chunk of) its body, read from the letter or the service's object store."""

    sequence: int = Field(ge=1, description="The letter's sequence in DEAD_LETTERS_<SERVICE>.")
    body_offset: int = Field(default=0, ge=0)
    body_limit: int = Field(default=MAX_BODY_CHUNK, ge=1, le=MAX_BODY_CHUNK)
    schema_version: Literal[1] = 1


class RedriveDeadLetter(Frozen):
    """Send a parked message back to its original subject with a new Nats-Msg-Id (the original body, or a
    corrected one for a message that came in from outside), and record that it was redriven."""

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Retries reuse the same id.")
    sequence: int = Field(ge=1)
    payload_base64: str | None = Field(
        default=None,
        max_length=4 * (MAX_REDRIVE_BODY // 3 + 1),
        description="The corrected body (base64); absent: the original body, byte for byte.",
    )
    again: bool = Field(default=False, description="Send a letter that was redriven before once more.")
    schema_version: Literal[1] = 1


class DeadLetterRedriven(Frozen):
    """The record of a redrive, kept in the dead-letter stream beside the letter (ids only, no body)."""

    service: str
    sequence: int
    command_id: uuid.UUID
    original_subject: str
    msg_id: str
    published_stream: str
    published_sequence: int
    edited: bool
    payload_sha256: str
    redriven_by: str
    redriven_at: AwareDatetime
    schema_version: Literal[1] = 1
