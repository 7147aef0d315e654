"""Discharges and fills onto the intakes, each read first the way the service will read it, so what it would park
in its dead letters is refused here, with the reason, and nothing is sent.

The reader is the service's own, lent through the `mtm.readers` entry points (`discharge-intake`, `fill-intake`
of mtm-reconciliation); without the service installed the CLI reads with `mtm.fhir` and the contracts' limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import rich_click as click
from pydantic import ValidationError

from mtm.cli import output
from mtm.cli.errors import REFUSED, UsageError
from mtm.cli.output import json_option
from mtm.contracts import MedicationDispensed, TransitionOfCareRecorded
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, FILL_INTAKE_SUBJECT
from mtm.platform.connection import NatsClient

READERS = "mtm.readers"
# Bodies the intake consumers accept (`MTM_MAX_MESSAGE_BYTES`, default 1 MiB); larger ones are parked unread.
MAX_BODY_BYTES = 1024 * 1024

IntakeReader = Callable[[bytes], Sequence[str]]
"""Bytes as sent → the patient ids they are about; ValueError with the reason the service would park them."""


@dataclass(frozen=True)
class Intake:
    kind: str
    subject: str
    reader: str
    native: type[TransitionOfCareRecorded] | type[MedicationDispensed]


DISCHARGE = Intake("discharge", DISCHARGE_INTAKE_SUBJECT, "discharge-intake", TransitionOfCareRecorded)
FILL = Intake("fill", FILL_INTAKE_SUBJECT, "fill-intake", MedicationDispensed)


@dataclass(frozen=True)
class Checked:
    path: Path
    payload: bytes
    msg_id: str
    patients: tuple[str, ...] = ()
    refused: str | None = None


def _describe(exc: Exception) -> str:
    from mtm.platform.consumer import describe_invalid

    return describe_invalid(exc)


def _fallback(intake: Intake) -> IntakeReader:
    """Without the service: the FHIR reader (`mtm.fhir`) and the native contract with its limits."""

    def read(payload: bytes) -> Sequence[str]:
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
            if body.get("resourceType") != "Bundle":
                return (intake.native.model_validate(body).patient_id,)
            if intake is FILL:
                from mtm.fhir.member import parse_dispense_bundle

                return tuple(dict.fromkeys(patient for patient, _ in parse_dispense_bundle(body)))
            from mtm.fhir import parse_bundle

            return (parse_bundle(body).patient.patient_id,)
        except RecursionError as exc:
            raise ValueError("body: nested too deeply to read") from exc
        except (ValidationError, ValueError) as exc:
            raise ValueError(_describe(exc)) from exc

    return read


def reader(intake: Intake) -> IntakeReader:
    found = {entry.name: entry for entry in entry_points(group=READERS)}
    entry = found.get(intake.reader)
    if entry is None:
        return _fallback(intake)
    service_reader: IntakeReader = entry.load()
    return service_reader


def msg_id(payload: bytes, intake: Intake) -> str:
    """Native events are deduplicated by their id, bundles by their content (as the intake derives its ids)."""
    try:
        body = json.loads(payload)
        if isinstance(body, dict) and body.get("resourceType") != "Bundle" and body.get("id"):
            return str(body["id"])
    except ValueError:
        pass
    return "fhir-bundle:" + hashlib.sha256(payload).hexdigest()


def check(paths: Sequence[Path], intake: Intake) -> list[Checked]:
    """Each file read as the service will read it; a file that cannot be read at all is refused too."""
    read = reader(intake)
    checked = []
    for path in paths:
        try:
            payload = path.read_bytes()
        except OSError as exc:
            checked.append(Checked(path, b"", "", refused=f"cannot read it ({exc.strerror or type(exc).__name__})"))
            continue
        if len(payload) > MAX_BODY_BYTES:
            reason = f"body: {len(payload)} bytes, over the {MAX_BODY_BYTES} bytes the {intake.kind} intake accepts"
            checked.append(Checked(path, payload, "", refused=reason))
            continue
        try:
            patients = tuple(read(payload))
        except ValueError as exc:
            checked.append(Checked(path, payload, "", refused=str(exc) or type(exc).__name__))
            continue
        checked.append(Checked(path, payload, msg_id(payload, intake), patients))
    return checked


async def publish_checked(client: NatsClient, checked: Sequence[Checked], intake: Intake) -> list[dict[str, Any]]:
    from mtm.cli.tool import connected, publish

    published = []
    async with connected(client) as nc:
        for item in checked:
            ack = await publish(nc, intake.subject, item.payload, item.msg_id)
            published.append(
                {
                    "file": str(item.path),
                    "patients": [f"Patient/{p}" for p in item.patients],
                    "stream": ack.stream,
                    "seq": ack.seq,
                    "duplicate": bool(ack.duplicate),
                }
            )
    return published


async def replay_synthea(client: NatsClient, files: Sequence[Path], limit: int | None) -> dict[str, int]:
    """Publish the Synthea population's transitions of care as FHIR bundles on the discharge intake."""
    from mtm.cli.tool import connected, publish
    from mtm.fhir.synthea import transitions_from_patient_bundle

    published = duplicates = 0
    async with connected(client) as nc:
        for path in files:
            for bundle in transitions_from_patient_bundle(json.loads(path.read_bytes())):
                if limit is not None and published + duplicates >= limit:
                    return {"published": published, "duplicates": duplicates}
                payload = json.dumps(bundle).encode()
                ack = await publish(
                    nc, DISCHARGE_INTAKE_SUBJECT, payload, "fhir-bundle:" + hashlib.sha256(payload).hexdigest()
                )
                duplicates += bool(ack.duplicate)
                published += not ack.duplicate
    return {"published": published, "duplicates": duplicates}


FILES_ARGUMENT = click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON files: native events or FHIR R4 Bundles.",
)


def _publish_files(files: Sequence[Path], intake: Intake, as_json: bool) -> int:
    """Every file read first; one the service would park is named with the reason and nothing is sent."""
    from mtm.cli.stack import nats_client

    checked = check(files, intake)
    refused = [item for item in checked if item.refused is not None]
    if refused:
        for item in refused:
            if as_json:
                output.json_line({"file": str(item.path), "refused": item.refused})
            output.error(f"{item.path}: refused, the {intake.kind} intake would dead-letter it: {item.refused}")
        output.note(f"nothing published ({len(refused)} of {len(checked)} files refused)")
        return REFUSED
    published = asyncio.run(publish_checked(nats_client(), checked, intake))
    if as_json:
        for row in published:
            output.json_line(row)
        return 0
    output.table(
        ("File", "Patient", "Stream", "Seq", "Duplicate"),
        ((r["file"], r["patients"], r["stream"], r["seq"], r["duplicate"]) for r in published),
    )
    return 0


@click.command("publish-discharge")
@FILES_ARGUMENT
@json_option
def publish_discharge(files: tuple[Path, ...], as_json: bool) -> int:
    """Publish discharges (native TransitionOfCareRecorded JSON or FHIR R4 Bundles), each checked first as
    reconciliation will read it: a file it would dead-letter is refused with the reason and nothing is sent."""
    return _publish_files(files, DISCHARGE, as_json)


@click.command("publish-fill")
@FILES_ARGUMENT
@json_option
def publish_fill(files: tuple[Path, ...], as_json: bool) -> int:
    """Publish pharmacy fills (native MedicationDispensed JSON or FHIR R4 Bundles of MedicationDispense), each
    checked first as the intake will read it."""
    return _publish_files(files, FILL, as_json)


@click.command("replay-synthea")
@click.argument(
    "directory",
    default="data/synthea/bundles",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A folder of Synthea patient bundles (*.json).",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many discharges.")
@json_option
def replay_synthea_command(directory: Path, limit: int | None, as_json: bool) -> int:
    """Publish the Synthea population's discharges (FHIR bundles) onto the discharge intake."""
    from mtm.cli.stack import nats_client

    files = sorted(directory.glob("*.json"))
    if not files:
        raise UsageError(f"{directory}: no Synthea bundles (*.json) found")
    result = asyncio.run(replay_synthea(nats_client(), files, limit))
    if as_json:
        output.print_json(result)
    else:
        output.fields(result.items())
    return 0


COMMANDS = (publish_discharge, publish_fill, replay_synthea_command)
