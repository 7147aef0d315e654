"""`mtm rebuild`: ask each service to rebuild its tables from the log and follow its progress until the swap."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import nats
from nats.aio.msg import Msg

from mtm.cli.identity import current_token
from mtm.cli.tool import ToolError
from mtm.contracts import CommandReply
from mtm.contracts.admin import RebuildProgress, RebuildProjection, rebuild_progress_subject, rebuild_subject
from mtm.contracts.identity import bearer

BAR_WIDTH = 30
# A rebuild reports at least every half second while it runs; this long without a word means it is gone.
SILENCE_TIMEOUT_S = 120.0


def render(report: RebuildProgress) -> str:
    done = report.applied / report.total if report.total else (1.0 if report.phase == "swapped" else 0.0)
    filled = int(BAR_WIDTH * min(done, 1.0))
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    rate = f"{report.events_per_s:,.0f} events/s" if report.events_per_s else ""
    return f"{report.service:<14} [{bar}] {report.applied:>9,}/{report.total:<9,} {report.phase:<11} {rate}"


async def rebuild_one(nc: nats.NATS, service: str, token: str, out: TextIO) -> RebuildProgress:
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
            raise ToolError(f"{service} is not running: is the stack up (mtm up)?") from exc
        reply = CommandReply.model_validate_json(raw.data)
        if not reply.ok:
            raise ToolError(f"{service}: {reply.outcome}: {reply.message}")
        while True:
            try:
                report = await asyncio.wait_for(reports.get(), SILENCE_TIMEOUT_S)
            except TimeoutError as exc:
                raise ToolError(f"{service}: no progress for {SILENCE_TIMEOUT_S:.0f} s; see its log") from exc
            out.write("\r" + render(report))
            out.flush()
            if report.phase in ("swapped", "failed"):
                out.write("\n")
                if report.phase == "failed":
                    raise ToolError(f"{service}: rebuild failed: {report.message}")
                return report
    finally:
        await sub.unsubscribe()


async def rebuild_services(url: str, services: list[str], out: TextIO = sys.stdout) -> int:
    token = current_token()
    if token is None:
        raise ToolError("not logged in: rebuilding needs an admin (mtm login NAME)")
    nc = await nats.connect(url, connect_timeout=5)
    try:
        for service in services:
            await rebuild_one(nc, service, token, out)
    finally:
        await nc.drain()
    return 0
