"""NATS for the `mtm` command: connect within seconds or say the stack is not up, ask a service with the actor
token, publish onto an intake; every failure becomes one clear `CliError`."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, TextIO

import nats
from nats.aio.client import Client
from nats.js import errors as js_errors
from pydantic import BaseModel

from mtm.cli.errors import CliError, Denied, Unavailable
from mtm.contracts import CommandReply
from mtm.contracts.identity import bearer
from mtm.platform.connection import NatsClient

# How long `mtm` tries to reach NATS before it says the stack is not up (two attempts on each server).
CONNECT_TIMEOUT_S = 4.0
ATTEMPT_TIMEOUT_S = 2
# A reply takes this long at most: commands wait (bounded) until their event is applied.
REQUEST_TIMEOUT_S = 15.0
PUBLISH_TIMEOUT_S = 10.0

# Kept for callers of the former `mtm.cli.tool` (the demo, tests): one error type for the person at the terminal.
ToolError = CliError

# nats-py logs every failed connection attempt with a traceback unless told otherwise.
logging.getLogger("nats").setLevel(logging.CRITICAL)


async def _quiet(_exc: Exception) -> None:
    """nats-py's error callback: a failed attempt is reported once, by `connect`, not per attempt."""


async def connect(client: NatsClient) -> Client:
    """A connection as the client's user (TLS, its own inbox) within `CONNECT_TIMEOUT_S`, or `Unavailable` saying
    where NATS was looked for (never with the password)."""
    where = client.redacted()
    try:
        return await asyncio.wait_for(
            client.connect(
                connect_timeout=ATTEMPT_TIMEOUT_S,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]
                allow_reconnect=False,
                error_cb=_quiet,
                name="mtm-cli",
            ),
            CONNECT_TIMEOUT_S,
        )
    except nats.errors.AuthorizationError as exc:
        raise Denied(f"NATS at {where} refused this client's credentials") from exc
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise Unavailable(f"cannot reach NATS at {where}: is the stack up? (`mtm up`, or set MTM_NATS_URL)") from exc


@contextlib.asynccontextmanager
async def connected(client: NatsClient) -> AsyncIterator[Client]:
    nc = await connect(client)
    try:
        yield nc
    except (
        nats.errors.ConnectionClosedError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
    ) as exc:
        raise Unavailable(f"lost the connection to NATS at {client.redacted()}") from exc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), PUBLISH_TIMEOUT_S)


def require_token(token: str | None = None) -> str:
    from mtm.cli.identity import current_token

    found = token or current_token()
    if found is None:
        raise Denied("not logged in: run `mtm login USER` first (the password from MTM_PASSWORD or the prompt)")
    return found


async def ask(nc: Client, subject: str, body: BaseModel, token: str) -> CommandReply:
    """One request with the actor token on an open connection; no answer at all is `Unavailable`."""
    try:
        reply = await nc.request(
            subject, body.model_dump_json().encode(), timeout=REQUEST_TIMEOUT_S, headers=bearer(token)
        )
    except nats.errors.NoRespondersError as exc:
        raise Unavailable(f"no service answers on {subject}: is the stack up (mtm up)?") from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        raise Unavailable(f"no answer on {subject} within {REQUEST_TIMEOUT_S:.0f} s") from exc
    return CommandReply.model_validate_json(reply.data)


async def request(client: NatsClient, subject: str, command: BaseModel, token: str | None = None) -> CommandReply:
    """Send a command or query with the actor token (the saved `mtm login` one unless given) and read the reply."""
    token = require_token(token)
    async with connected(client) as nc:
        return await ask(nc, subject, command, token)


async def publish(nc: Client, subject: str, payload: bytes, msg_id: str) -> Any:
    """Onto a JetStream stream, deduplicated by `msg_id`; no stream on the subject is `Unavailable`."""
    try:
        return await nc.jetstream().publish(
            subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=PUBLISH_TIMEOUT_S
        )
    except (nats.errors.NoRespondersError, js_errors.NoStreamResponseError, js_errors.ServiceUnavailableError) as exc:
        raise Unavailable(f"no stream takes {subject}: has the stack started once (mtm up)?") from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        raise Unavailable(
            f"JetStream did not confirm the message on {subject} within {PUBLISH_TIMEOUT_S:.0f} s"
        ) from exc


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise CliError(f"{what}: {value!r} is not a UUID") from exc


def write_csv(out: TextIO, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
