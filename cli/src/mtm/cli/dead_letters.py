"""`mtm dead-letters list|show|redrive SERVICE`: what a service parked, why, and sending fixed messages back.

An admin's requests to the service that parked them (it reads its own stream and object store, and records each
redrive); listings print reasons and ids only, a body only on `show`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import rich_click as click

from mtm.cli import output, tool
from mtm.cli.errors import CliError, UsageError
from mtm.cli.output import json_option
from mtm.cli.params import SERVICE
from mtm.cli.stack import nats_client
from mtm.contracts import CommandReply
from mtm.contracts.dead_letter import (
    MAX_REDRIVE_BODY,
    GetDeadLetter,
    ListDeadLetters,
    RedriveDeadLetter,
    dead_letters_subject,
)

SERVICE_ARGUMENT = click.argument(
    "service", type=SERVICE, help="The service whose dead letters (DEAD_LETTERS_<SERVICE>)."
)
SEQUENCE_ARGUMENT = click.argument(
    "sequence", type=click.IntRange(min=1), help="The letter's sequence, as `mtm dead-letters list` shows it."
)


def _ask(service: str, action: str, body: Any) -> CommandReply:
    return asyncio.run(tool.request(nats_client(), dead_letters_subject(service, action), body))


@click.group("dead-letters")
def dead_letters() -> None:
    """Messages a service could not process, kept with the reason (admin)."""


def _when(value: str | None) -> str | None:
    return value[:19].replace("T", " ") if value else None


@dead_letters.command("list")
@SERVICE_ARGUMENT
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only letters after this sequence (next page).")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="At most this many.")
@json_option
def list_letters(service: str, after: int, limit: int, as_json: bool) -> int:
    """The service's dead letters, oldest first, with their reasons (never their bodies)."""
    reply = _ask(service, "list", ListDeadLetters(after_sequence=after, limit=limit))

    def render(r: CommandReply) -> None:
        data = r.data if isinstance(r.data, dict) else {}
        output.table(
            ("Seq", "Parked at", "Consumer", "Subject", "Deliveries", "Bytes", "Redriven", "Reason"),
            (
                (
                    letter["sequence"],
                    _when(letter["parked_at"]),
                    letter["consumer"],
                    letter["original_subject"],
                    letter["deliveries"],
                    letter["body_size"],
                    f"{_when(letter['redriven']['at'])} by {letter['redriven']['by']}" if letter["redriven"] else None,
                    letter["reason"],
                )
                for letter in output.rows_of(data, "letters")
            ),
            title=f"DEAD_LETTERS_{service.upper()}",
            empty="no dead letters",
        )
        if data.get("next_after"):
            output.note(f"more: mtm dead-letters list {service} --after {data['next_after']}")

    return output.show_reply(reply, as_json, render)


async def _whole_letter(service: str, sequence: int) -> CommandReply:
    """The letter with its whole body, read chunk by chunk (a body may be larger than one reply)."""
    token = tool.require_token()
    subject = dead_letters_subject(service, "get")
    async with tool.connected(nats_client()) as nc:
        first = await tool.ask(nc, subject, GetDeadLetter(sequence=sequence), token)
        if not first.ok or not isinstance(first.data, dict):
            return first
        data = dict(first.data)
        body = base64.b64decode(data.pop("body_base64"))
        while len(body) < data["body_size"]:
            more = await tool.ask(nc, subject, GetDeadLetter(sequence=sequence, body_offset=len(body)), token)
            if not more.ok or not isinstance(more.data, dict):
                return more
            chunk = base64.b64decode(more.data["body_base64"])
            if not chunk:
                break
            body += chunk
    data.update(body_base64=base64.b64encode(body).decode("ascii"), body_offset=0)
    return first.model_copy(update={"data": data})


def _body_text(body: bytes) -> str:
    """JSON indented when it is JSON, text when it is text, base64 otherwise."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")


@dead_letters.command("show")
@SERVICE_ARGUMENT
@SEQUENCE_ARGUMENT
@click.option(
    "--body-only", is_flag=True, help="Only the original body, byte for byte (to fix it and redrive with --body)."
)
@json_option
def show(service: str, sequence: int, body_only: bool, as_json: bool) -> int:
    """One dead letter: where it came from, why it was parked, and the original body (which may hold PHI)."""
    reply = asyncio.run(_whole_letter(service, sequence))
    if reply.ok and body_only and isinstance(reply.data, dict):
        output.write_bytes(base64.b64decode(reply.data["body_base64"]))
        return 0

    def render(r: CommandReply) -> None:
        data = dict(r.data) if isinstance(r.data, dict) else {}
        body = base64.b64decode(data.pop("body_base64", ""))
        data.pop("body_offset", None)
        output.document(data, title=f"DEAD_LETTERS_{service.upper()} #{sequence}")
        output.line("")
        output.line(_body_text(body))

    return output.show_reply(reply, as_json, render)


@dead_letters.command("redrive")
@SERVICE_ARGUMENT
@SEQUENCE_ARGUMENT
@click.option(
    "--body",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A corrected body to send instead of the original (an intake message; the patient log is never edited).",
)
@click.option("--again", is_flag=True, help="Send a letter that was redriven before once more.")
@json_option
def redrive(service: str, sequence: int, body: Path | None, again: bool, as_json: bool) -> int:
    """Send a parked message back to its original subject with a new Nats-Msg-Id, and record that it was redriven.

    A corrected body (--body) is read first the way the intake will read it, like `mtm publish-discharge`."""
    payload = None
    if body is not None:
        content = body.read_bytes()
        if len(content) > MAX_REDRIVE_BODY:
            raise UsageError(f"{body}: {len(content)} bytes; a corrected body is at most {MAX_REDRIVE_BODY} bytes")
        _check_corrected(service, sequence, body)
        payload = base64.b64encode(content).decode("ascii")
    command = RedriveDeadLetter(sequence=sequence, payload_base64=payload, again=again)
    reply = _ask(service, "redrive", command)
    if reply.outcome == "conflict" and not as_json:
        output.note("(--again sends it once more)")
    return output.show_reply(reply, as_json)


def _check_corrected(service: str, sequence: int, body: Path) -> None:
    """A corrected intake message is refused here when the intake would park it again."""
    from mtm.cli import intake

    first = GetDeadLetter(sequence=sequence, body_limit=1)
    letter = asyncio.run(tool.request(nats_client(), dead_letters_subject(service, "get"), first))
    if not letter.ok or not isinstance(letter.data, dict):
        return  # the redrive itself will say what is wrong
    known = {intake.DISCHARGE.subject: intake.DISCHARGE, intake.FILL.subject: intake.FILL}
    kind = known.get(letter.data.get("original_subject", ""))
    if kind is None:
        return
    [checked] = intake.check([body], kind)
    if checked.refused is not None:
        raise CliError(f"{body}: refused, the {kind.kind} intake would dead-letter it again: {checked.refused}")


COMMANDS = (dead_letters,)
