"""A message a service could not process, parked with the reason instead of being dropped."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from pydantic import AwareDatetime, Field

from mtm.contracts.envelope import Frozen


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
