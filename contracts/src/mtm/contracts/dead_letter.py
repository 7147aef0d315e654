"""A message a service could not process, parked with the reason instead of being dropped."""

from __future__ import annotations

import base64
from datetime import datetime

from pydantic import AwareDatetime, Field

from mtm.contracts.envelope import Frozen


class DeadLetter(Frozen):
    service: str
    consumer: str
    original_subject: str
    original_stream: str | None = None
    original_sequence: int | None = None
    original_headers: dict[str, str] = {}
    payload_base64: str = Field(description="The original message body, byte for byte.")
    reason: str = Field(description="What was wrong and where, e.g. `data.patient.birth_date: invalid date`.")
    deliveries: int = 1
    parked_at: AwareDatetime

    @classmethod
    def of(cls, *, payload: bytes, parked_at: datetime, **fields: object) -> DeadLetter:
        return cls(payload_base64=base64.b64encode(payload).decode("ascii"), parked_at=parked_at, **fields)

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_base64)
