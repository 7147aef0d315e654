"""A pharmacist's and a physician's tool over NATS: publish discharges, list, claim, complete, answer."""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import nats
from pydantic import BaseModel, ValidationError

from mtm.contracts import CommandReply, MedicationDispensed, TransitionOfCareRecorded
from mtm.contracts.identity import bearer
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, FILL_INTAKE_SUBJECT

REQUEST_TIMEOUT_S = 10.0


class ToolError(Exception):
    """Something the person at the terminal must fix; printed without a traceback."""


def discharge_message(path: Path) -> tuple[bytes, str]:
    """The bytes to publish and their Nats-Msg-Id; a native event is validated here so mistakes show at once."""
    return intake_message(path, TransitionOfCareRecorded)


def intake_message(path: Path, native: type[TransitionOfCareRecorded] | type[MedicationDispensed]) -> tuple[bytes, str]:
    raw = path.read_bytes()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ToolError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        return raw, "fhir-bundle:" + hashlib.sha256(raw).hexdigest()
    try:
        event = native.model_validate(body)
    except ValidationError as exc:
        from mtm.platform.consumer import describe_invalid

        raise ToolError(f"{path}: {describe_invalid(exc)}") from exc
    return raw, str(event.id)


async def publish_discharges(url: str, paths: list[Path]) -> list[dict[str, Any]]:
    return await _publish(url, paths, DISCHARGE_INTAKE_SUBJECT, TransitionOfCareRecorded)


async def publish_fills(url: str, paths: list[Path]) -> list[dict[str, Any]]:
    """Pharmacy fills onto the fill intake: native MedicationDispensed JSON or FHIR Bundles of MedicationDispense."""
    return await _publish(url, paths, FILL_INTAKE_SUBJECT, MedicationDispensed)


async def _publish(
    url: str, paths: list[Path], subject: str, native: type[TransitionOfCareRecorded] | type[MedicationDispensed]
) -> list[dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        published = []
        for path in paths:
            payload, msg_id = intake_message(path, native)
            ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
            published.append({"file": str(path), "stream": ack.stream, "seq": ack.seq, "duplicate": ack.duplicate})
        return published
    finally:
        await nc.drain()


async def request(url: str, subject: str, command: BaseModel, token: str | None = None) -> CommandReply:
    """Send a command or query with the actor token (the saved `mtm login` one unless given) and read the reply."""
    from mtm.cli.identity import current_token

    token = token or current_token()
    if token is None:
        raise ToolError("not logged in: run `mtm login USER` first (the password from MTM_PASSWORD or the prompt)")
    nc = await nats.connect(url)
    try:
        reply = await nc.request(
            subject, command.model_dump_json().encode(), timeout=REQUEST_TIMEOUT_S, headers=bearer(token)
        )
    except nats.errors.NoRespondersError as exc:
        raise ToolError(f"no service answers on {subject}: is the stack up (mtm up)?") from exc
    except nats.errors.TimeoutError as exc:
        raise ToolError(f"no answer on {subject} within {REQUEST_TIMEOUT_S:.0f} s") from exc
    finally:
        await nc.drain()
    return CommandReply.model_validate_json(reply.data)


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise ToolError(f"{what}: {value!r} is not a UUID") from exc


async def replay_synthea(url: str, files: list[Path], limit: int | None) -> dict[str, int]:
    """Publish the Synthea population's transitions of care as FHIR bundles on the discharge intake."""
    from mtm.fhir.synthea import transitions_from_patient_bundle

    nc = await nats.connect(url)
    published = duplicates = 0
    try:
        js = nc.jetstream()
        for path in files:
            for bundle in transitions_from_patient_bundle(json.loads(path.read_bytes())):
                if limit is not None and published + duplicates >= limit:
                    return {"published": published, "duplicates": duplicates}
                payload = json.dumps(bundle).encode()
                msg_id = "fhir-bundle:" + hashlib.sha256(payload).hexdigest()
                ack = await js.publish(DISCHARGE_INTAKE_SUBJECT, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
                duplicates += bool(ack.duplicate)
                published += not ack.duplicate
    finally:
        await nc.drain()
    return {"published": published, "duplicates": duplicates}


def write_csv(out: TextIO, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
