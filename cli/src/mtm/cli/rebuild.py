"""`mtm rebuild`: ask each service to rebuild its tables from the log and follow its progress until the swap."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import nats
from nats.aio.msg import Msg

from mtm.cli.errors import CliError as ToolError
from mtm.cli.errors import Unavailable
from mtm.cli.tool import connect, require_token
from mtm.contracts import CommandReply
from mtm.contracts.admin import RebuildProgress, RebuildProjection, rebuild_progress_subject, rebuild_subject
from mtm.contracts.identity import bearer
from mtm.platform.connection import NatsClient

BAR_WIDTH = 30
# A rebuild reports at least every half second while it runs; this long without a word means it is gone.
SILENCE_TIMEOUT_S = 120.0


def render(report: RebuildProgress) -> str:
    done = report.applied / report.total if report.total else (1.0 if report.phase == "swapped" else 0.0)
    filled = int(BAR_WIDTH * min(done, 1.0))
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    rate = f"{report.events_per_s:,.0f} events/s" if report.events_per_s else ""
    return f"{report.service:<14} [{bar}] {report.applied:>9,}/{report.total:<9,} {report.phase:<11} {rate}"


async def rebuild_one(nc: nats.NATS, service: str, token: str, out: TextIO | None) -> RebuildProgress:
    """Start the rebuild and follow it to the swap; progress goes to `out` (none: quiet)."""
    command = RebuildProjection()
    reports: asyncio.Queue[RebuildProgress] = asyncio.Queue()

    async def on_progress(msg: Msg) -> None:
        await reports.put(RebuildProgress.model_validate_json(msg.data))

    sub = await nc.subscribe(rebuild_progress_subject(service, command.rebuild_id), cb=on_progress)
    try:
        try:
            raw = await nc.request(
                rebuild_subject(service), command.model_dump_json().encode(), timeout=10, headers=bearer(token)
            )
        except nats.errors.NoRespondersError as exc:
            raise Unavailable(f"{service} is not running: is the stack up (mtm up)?") from exc
        except nats.errors.TimeoutError as exc:
            raise Unavailable(f"{service} did not answer the rebuild request within 10 s") from exc
        reply = CommandReply.model_validate_json(raw.data)
        if not reply.ok:
            raise ToolError(f"{service}: {reply.outcome}: {reply.message}")
        while True:
            try:
                report = await asyncio.wait_for(reports.get(), SILENCE_TIMEOUT_S)
            except TimeoutError as exc:
                raise Unavailable(f"{service}: no progress for {SILENCE_TIMEOUT_S:.0f} s; see its log") from exc
            if out is not None:
                out.write("\r" + render(report))
                out.flush()
            if report.phase in ("swapped", "failed"):
                if out is not None:
                    out.write("\n")
                if report.phase == "failed":
                    raise ToolError(f"{service}: rebuild failed: {report.message}")
                return report
    finally:
        await sub.unsubscribe()


async def rebuild_services(
    client: NatsClient, services: list[str], out: TextIO | None = sys.stdout
) -> list[RebuildProgress]:
    """Each service rebuilt in turn; the last report of each (its phase `swapped`)."""
    token = require_token()
    nc = await connect(client)
    try:
        return [await rebuild_one(nc, service, token, out) for service in services]
    finally:
        await nc.close()
