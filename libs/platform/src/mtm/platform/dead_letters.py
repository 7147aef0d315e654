"""An admin reads the service's dead letters and sends fixed ones back (`mtm dead-letters list|show|redrive`).

Letters stay where `BatchProcessor._park` put them (`DEAD_LETTERS_<SERVICE>`, bodies too large for a letter in the
service's object store) until they expire by age (`MTM_DEAD_LETTER_MAX_AGE_S`); nothing deletes one before, so a
redrive is recorded beside the letter (`mtm.dlq.<service>.redriven.<sequence>`, `DeadLetterRedriven`) rather than
removing it. Only an admin's verified
token gets an answer (the runtime checks it before any of this runs); listings carry reasons and ids, never bodies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from mtm.contracts import CommandReply, DeadLetter
from mtm.contracts.dead_letter import (
    DeadLetterRedriven,
    GetDeadLetter,
    ListDeadLetters,
    RedriveDeadLetter,
    dead_letter_bucket,
    redrive_record_subject,
)
from mtm.contracts.identity import Actor
from mtm.contracts.subjects import DEAD_LETTER_PREFIX, PATIENT_EVENTS_PREFIX, dead_letter_stream
from mtm.platform.logging import get_logger
from mtm.platform.outbox import MSG_ID_HEADER

log = get_logger(__name__)

# Headers of the original message that are JetStream's business, not the message's: never sent again as they were.
_SERVER_HEADERS = ("Nats-",)
REDRIVEN_FROM_HEADER = "Mtm-Redriven-From"


class DeadLetters:
    """What the admin requests ask of one service's dead-letter stream and object store."""

    def __init__(self, js: JetStreamContext, service: str, may_send: Callable[[str], bool] | None = None) -> None:
        self._js = js
        self._service = service
        # What the server lets this service publish (the access table); None: anything (a test's own service).
        self._may_send = may_send
        self._stream = dead_letter_stream(service)
        self._letters = f"{DEAD_LETTER_PREFIX}.{service}.*"

    async def _letter(self, sequence: int) -> DeadLetter | None:
        try:
            raw = await self._js.get_msg(self._stream, seq=sequence)
        except NotFoundError:
            return None
        if raw.subject is None or len(raw.subject.split(".")) != 4 or raw.data is None:
            return None  # a redrive record, not a letter
        return DeadLetter.model_validate_json(raw.data)

    async def _redrives(self, sequence: int) -> DeadLetterRedriven | None:
        """The latest record of a redrive of letter `sequence`, if it was ever redriven."""
        try:
            raw = await self._js.get_last_msg(self._stream, redrive_record_subject(self._service, sequence))
        except NotFoundError:
            return None
        return DeadLetterRedriven.model_validate_json(raw.data or b"")

    async def _body(self, letter: DeadLetter) -> bytes | None:
        """The original body; None when it was kept in the object store and is gone (its age limit passed: the
        body is stored just before its letter, so it can expire a moment sooner)."""
        if letter.payload_object is None:
            return letter.payload
        try:
            store = await self._js.object_store(dead_letter_bucket(self._service))
            found = await store.get(letter.payload_object)
        except NotFoundError:
            return None
        return found.data or b""

    def _body_gone(self, sequence: int) -> CommandReply:
        return CommandReply(
            outcome="not_found", message=f"the body of dead letter {sequence} is no longer kept (its age limit passed)"
        )

    async def list(self, query: ListDeadLetters, actor: Actor) -> CommandReply:
        letters: list[dict[str, Any]] = []
        after = query.after_sequence
        while len(letters) < query.limit:
            try:
                raw = await self._js.get_msg(self._stream, seq=after + 1, subject=self._letters, next=True)
            except NotFoundError:
                break
            after = raw.seq or after + 1
            letter = DeadLetter.model_validate_json(raw.data or b"")
            redriven = await self._redrives(after)
            letters.append(summary(after, letter, redriven))
        more = len(letters) == query.limit
        log.info("dead letters listed", count=len(letters), reason_code=actor.role)
        return CommandReply(
            outcome="accepted",
            message=f"{len(letters)} dead letters" + (" (more after the last one)" if more else ""),
            data={"service": self._service, "letters": letters, "next_after": after if more else None},
        )

    async def get(self, query: GetDeadLetter, actor: Actor) -> CommandReply:
        letter = await self._letter(query.sequence)
        if letter is None:
            return CommandReply(outcome="not_found", message=f"no dead letter {query.sequence} in {self._stream}")
        body = await self._body(letter)
        if body is None:
            return self._body_gone(query.sequence)
        chunk = body[query.body_offset : query.body_offset + query.body_limit]
        redriven = await self._redrives(query.sequence)
        log.info("dead letter read", stream_seq=query.sequence, reason_code=actor.role)
        return CommandReply(
            outcome="accepted",
            resource_id=str(query.sequence),
            data={
                **summary(query.sequence, letter, redriven),
                "original_headers": letter.original_headers,
                "body_base64": base64.b64encode(chunk).decode("ascii"),
                "body_offset": query.body_offset,
                "body_size": len(body),
            },
        )

    async def redrive(self, command: RedriveDeadLetter, actor: Actor) -> CommandReply:
        letter = await self._letter(command.sequence)
        if letter is None:
            return CommandReply(outcome="not_found", message=f"no dead letter {command.sequence} in {self._stream}")
        before = await self._redrives(command.sequence)
        if before is not None and not command.again and before.command_id != command.command_id:
            return CommandReply(
                outcome="conflict",
                message=f"redriven already at {before.redriven_at.isoformat(timespec='seconds')} by "
                f"{before.redriven_by}; send again to redrive it once more",
                resource_id=str(command.sequence),
                status="redriven",
            )
        if self._may_send is not None and not self._may_send(letter.original_subject):
            # An event another service decided: only its producer may append it to the log (a forged one must not
            # get there), so it is not sent back from here.
            return CommandReply(
                outcome="invalid",
                message=f"{self._service} may not send this letter back: only the service that decided an event "
                "of the patient log may append it (an admin may republish it as it was)",
                resource_id=str(command.sequence),
            )
        if command.payload_base64 is not None:
            if letter.original_subject.startswith(f"{PATIENT_EVENTS_PREFIX}."):
                return CommandReply(
                    outcome="invalid",
                    message="an event of the patient log is redriven as it was: the log is never edited",
                )
            try:
                body = base64.b64decode(command.payload_base64, validate=True)
            except (binascii.Error, ValueError):
                return CommandReply(outcome="invalid", message="payload_base64: not base64")
        else:
            kept = await self._body(letter)
            if kept is None:
                return self._body_gone(command.sequence)
            body = kept
        msg_id = f"redrive:{self._service}:{command.sequence}:{command.command_id}"
        headers = {k: v for k, v in letter.original_headers.items() if not k.startswith(_SERVER_HEADERS)}
        headers.update({MSG_ID_HEADER: msg_id, REDRIVEN_FROM_HEADER: f"{self._stream}/{command.sequence}"})
        ack = await self._js.publish(letter.original_subject, body, headers=headers)
        record = DeadLetterRedriven(
            service=self._service,
            sequence=command.sequence,
            command_id=command.command_id,
            original_subject=letter.original_subject,
            msg_id=msg_id,
            published_stream=ack.stream,
            published_sequence=ack.seq,
            edited=command.payload_base64 is not None,
            payload_sha256=hashlib.sha256(body).hexdigest(),
            redriven_by=actor.user_id,
            redriven_at=datetime.now(UTC),
        )
        await self._js.publish(
            redrive_record_subject(self._service, command.sequence),
            record.model_dump_json().encode(),
            headers={MSG_ID_HEADER: f"redriven:{msg_id}"},
        )
        log.info(
            "dead letter redriven",
            stream_seq=command.sequence,
            subject=letter.original_subject,
            outcome="accepted",
            reason_code=actor.role,
        )
        return CommandReply(
            outcome="accepted",
            message=f"sent back to {letter.original_subject} ({ack.stream} #{ack.seq})",
            resource_id=str(command.sequence),
            status="redriven",
            data=record.model_dump(mode="json"),
        )


def summary(sequence: int, letter: DeadLetter, redriven: DeadLetterRedriven | None) -> dict[str, Any]:
    """A letter as listings show it: where it came from and why it was parked; no body, no headers."""
    return {
        "sequence": sequence,
        "parked_at": letter.parked_at.isoformat(),
        "consumer": letter.consumer,
        "original_subject": letter.original_subject,
        "original_stream": letter.original_stream,
        "original_sequence": letter.original_sequence,
        "deliveries": letter.deliveries,
        "reason": letter.reason,
        "body_size": letter.payload_size,
        "body_in_object_store": letter.payload_object is not None,
        "redriven": None
        if redriven is None
        else {
            "at": redriven.redriven_at.isoformat(),
            "by": redriven.redriven_by,
            "edited": redriven.edited,
            "published_stream": redriven.published_stream,
            "published_sequence": redriven.published_sequence,
        },
    }
