"""The web app under a pharmacy's load: the worklist page with 10,000 open tasks (server time, p50/p99), and the
live update from a discharge to a connected browser's event stream.

The four services and the web app run as processes (`python -m mtm.web` too). 10,000 Synthea-based discharges go
through reconciliation and review into open tasks; a pharmacist signs in over HTTP and loads the worklist page
again and again (the app's own `Server-Timing` gives its time, the client's clock the whole round trip). Then the
pharmacist's event stream stays open while single discharges arrive a second apart: from the publish to the row
pushed on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    SERVICES,
    PhaseFailed,
    Progress,
    Servers,
    ServiceFleet,
    encoded_events,
    percentile,
    publish_windowed,
    running_fleet,
)
from mtm.contracts import CommandReply, ListWorklist
from mtm.contracts.identity import Actor, bearer
from mtm.contracts.subjects import LIST_WORKLIST
from mtm.platform.connection import NatsClient
from mtm.platform.identity import TokenIssuer, generate_keypair

OPEN_TASKS = 10_000
PAGE_LOADS = 200
LIVE_DISCHARGES = 30
LIVE_EVERY_S = 1.0
PHARMACIST = Actor(user_id="bench-rph", role="pharmacist", practitioner_id="rph-bench")
PASSWORD = secrets.token_urlsafe(12)
SERVER_TIMING = re.compile(r"app;dur=([\d.]+)")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def open_tasks(client: NatsClient, issuer: TokenIssuer) -> int:
    nc = await client.connect()
    try:
        reply = await nc.request(
            LIST_WORKLIST,
            ListWorklist(limit=1).model_dump_json().encode(),
            timeout=10,
            headers=bearer(issuer.issue(PHARMACIST, ttl=timedelta(minutes=5))),
        )
    finally:
        await nc.drain()
    found = CommandReply.model_validate_json(reply.data)
    return int(found.data["total"]) if found.ok and isinstance(found.data, dict) else 0


async def sign_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    token = CSRF.search(page.text)
    if token is None:
        raise PhaseFailed("the sign-in page has no CSRF token")
    signed = await client.post(
        "/login", data={"user": PHARMACIST.user_id, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    if signed.status_code != 303:
        raise PhaseFailed(f"sign-in answered {signed.status_code}")


async def page_times(client: httpx.AsyncClient, path: str, loads: int) -> tuple[list[float], list[float]]:
    server, total = [], []
    for _ in range(loads):
        started = time.perf_counter()
        page = await client.get(path)
        total.append((time.perf_counter() - started) * 1000)
        if page.status_code != 200:
            raise PhaseFailed(f"GET {path} answered {page.status_code}")
        timing = SERVER_TIMING.search(page.headers.get("server-timing", ""))
        if timing is None:
            raise PhaseFailed("the web app sent no Server-Timing header")
        server.append(float(timing.group(1)))
    return server, total


async def live_latencies(client: httpx.AsyncClient, js: Any, progress: Progress) -> tuple[list[float], int]:
    """From publishing a discharge to its row on the pharmacist's event stream, one discharge a second."""
    run = secrets.token_hex(4)
    discharges = encoded_events(LIVE_DISCHARGES, run_id=run)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    ready, all_seen = asyncio.Event(), asyncio.Event()

    async def listen() -> None:
        async with client.stream("GET", "/worklist/events", timeout=None) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: ready"):
                    ready.set()
                for patient in re.findall(rf"Patient/(b{run}-\d+)", line):
                    seen.setdefault(patient, time.monotonic())
                if len(seen) == LIVE_DISCHARGES:
                    all_seen.set()

    listener = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
        for n, (subject, body, headers) in enumerate(discharges):
            sent[f"b{run}-{n}"] = time.monotonic()
            await js.publish(subject, body, headers=headers)
            progress(f"live updates {n + 1}/{LIVE_DISCHARGES}", 0.75 + 0.25 * n / LIVE_DISCHARGES)
            await asyncio.sleep(LIVE_EVERY_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), timeout=15)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await listener
    latencies = [(seen[p] - sent[p]) * 1000 for p in sent if p in seen]
    return latencies, len(sent) - len(latencies)


async def run(servers: Servers, log_dir: Path, progress: Progress, *, tasks: int = OPEN_TASKS) -> dict[str, Any]:
    private, public = generate_keypair()
    issuer = TokenIssuer(private)
    port = free_port()
    async with servers.nats("web") as on_phase:
        fleet = ServiceFleet(
            on_phase,
            servers,
            "web",
            log_dir,
            services=(*SERVICES, "web"),
            extra_env={
                "MTM_ACTOR_PUBLIC_KEYS": public,
                "MTM_WEB_SIGNING_KEY": private,
                "MTM_WEB_SESSION_SECRET": secrets.token_urlsafe(32),
                "MTM_WEB_PORT": str(port),
            },
        )
        progress("starting the services and the web app", 0.0)
        async with running_fleet(fleet):
            from mtm.web.accounts import Store

            # The web app's accounts database, as the web app's own role.
            store = await Store.open(fleet.database_url("web"))
            try:
                await store.add_account(
                    PHARMACIST.user_id, PHARMACIST.role, PHARMACIST.practitioner_id, PASSWORD, replace=True
                )
            finally:
                await store.close()
            progress(f"building {tasks:,} discharges", 0.02)
            discharges = await asyncio.to_thread(encoded_events, tasks)
            admin = on_phase.nats_client()
            nc = await admin.connect()
            try:
                js = nc.jetstream(publish_async_max_pending=2000)
                await publish_windowed(js, discharges, lambda n: progress(f"published {n:,}", 0.05 + 0.1 * n / tasks))
                deadline = time.monotonic() + 600
                while (found := await open_tasks(admin, issuer)) < tasks:
                    fleet.check_alive()
                    if time.monotonic() > deadline:
                        raise PhaseFailed(f"only {found:,} of {tasks:,} tasks opened in 10 minutes; logs: {log_dir}")
                    progress(f"{found:,} tasks open", 0.15 + 0.45 * found / tasks)
                    await asyncio.sleep(1.0)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                    await sign_in(client)
                    await page_times(client, "/worklist", 10)  # warm-up
                    progress("loading the worklist page", 0.6)
                    first_server, first_total = await page_times(client, "/worklist", PAGE_LOADS)
                    progress("loading a filtered worklist page", 0.7)
                    deep_server, _ = await page_times(client, "/worklist?priority=routine&page=100", PAGE_LOADS // 4)
                    latencies, missing = await live_latencies(client, js, progress)
            finally:
                await nc.drain()
    if not latencies:
        raise PhaseFailed(f"no live update reached the event stream; logs: {log_dir}")
    return {
        "web_open_tasks": tasks,
        "web_worklist_server_p50_ms": round(percentile(first_server, 0.50), 2),
        "web_worklist_server_p99_ms": round(percentile(first_server, 0.99), 2),
        "web_worklist_total_p50_ms": round(percentile(first_total, 0.50), 2),
        "web_worklist_total_p99_ms": round(percentile(first_total, 0.99), 2),
        "web_worklist_filtered_server_p50_ms": round(percentile(deep_server, 0.50), 2),
        "web_worklist_filtered_server_p99_ms": round(percentile(deep_server, 0.99), 2),
        "web_page_loads": PAGE_LOADS,
        "web_live_p50_ms": round(percentile(latencies, 0.50), 1),
        "web_live_p99_ms": round(percentile(latencies, 0.99), 1),
        "web_live_samples": len(latencies),
        "web_live_missing": missing,
    }
