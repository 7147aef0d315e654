"""Discharge intake and reconciliation as a first FastStream app would write them: push consumer, a transaction each."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from importlib.resources import files
from pathlib import Path

import asyncpg
import nats
import nats.aio.client
from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker
from faststream.nats.annotations import NatsMessage
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from bench.workload import encoded, sent_by_hospital
from mtm.contracts import TransitionOfCareRecorded
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, PATIENT_EVENTS_STREAM, dead_letter_stream
from mtm.devstack.infra import Infrastructure
from mtm.platform.connection import NatsClient
from mtm.platform.db import apply_migrations
from mtm.platform.projection import LIVE_SCHEMA, SEARCH_PATH, UnitOfWork, platform_projection_migrations
from mtm.platform.settings import with_database
from mtm.platform.streams import DISCHARGE_INTAKE, PATIENT_EVENTS, declare_stream
from mtm.reconciliation.adapters.reconciliations import RECONCILIATIONS
from mtm.reconciliation.application import reconcile_now

Progress = Callable[[str, float], None]

DURABLE = "bench-naive"
POLL_S = 0.2
PUBLISH_WINDOW = 4000
# Only long enough to absorb a retried publish; the dedup table of a large stream costs server memory.
PREPUBLISH_DUPLICATE_WINDOW_S = 30.0
MIGRATIONS = [("platform", files("mtm.platform") / "migrations")]
PROJECTION_MIGRATIONS = [
    (LIVE_SCHEMA, [("platform", platform_projection_migrations()), ("reconciliation", RECONCILIATIONS.migrations)])
]
SERVICE_DURABLE = "reconciliation-discharge-intake"
BENCH_KEK = base64.b64encode(os.urandom(32)).decode()


# --- helpers the other bench modules share --------------------------------------------------------------------


async def create_database(server_url: str, name: str) -> str:
    """A fresh, empty database on the server (dropped first if a crashed run left it); returns its URL."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrated_pool(url: str, *, max_size: int = 10) -> asyncpg.Pool:
    """The service's own tables (the outbox, and the reconciliation projection's schema) on a fresh database."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, server_settings={"search_path": SEARCH_PATH})
    assert pool is not None
    await apply_migrations(pool, MIGRATIONS, PROJECTION_MIGRATIONS)
    return pool


async def projection_connection(url: str) -> asyncpg.Connection:
    """A connection that sees the projection's tables by their plain names, as the service does."""
    return await asyncpg.connect(url, server_settings={"search_path": SEARCH_PATH})


async def delete_stream(js: JetStreamContext, name: str) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(name)


async def fresh_patient_log(js: JetStreamContext, *, duplicate_window_s: float = PREPUBLISH_DUPLICATE_WINDOW_S) -> None:
    """PATIENT_EVENTS exactly as the reconciliation service declares it, empty."""
    await delete_stream(js, PATIENT_EVENTS_STREAM)
    await declare_stream(js, PATIENT_EVENTS, replicas=1, duplicate_window_s=duplicate_window_s)


async def publish_all(
    nc: nats.aio.client.Client,
    js: JetStreamContext,
    messages: Iterable[tuple[str, bytes, dict[str, str]]],
    total: int,
    progress: Progress,
    label: str,
    *,
    chunk: int = 10_000,
    confirm_every: int = 1,
) -> int:
    """Windowed publish with confirms (the window is the context's `publish_async_max_pending`); fails on any nack.

    With `confirm_every` > 1 only every n-th message asks for a confirm and the rest go out as plain publishes on
    the same connection (`nc`, the one `js` was made from), which the server stores in order: the confirms still
    bound what is in flight, at a third of the client's cost per message. The caller checks the message count.
    """
    sent = 0
    futures: list[asyncio.Future[object]] = []
    for subject, body, headers in messages:
        sent += 1
        if sent % confirm_every == 0 or sent == total:
            futures.append(await js.publish_async(subject, body, headers=headers))
        else:
            await nc.publish(subject, body, headers=headers)
        if sent % chunk == 0:
            await asyncio.gather(*futures)
            futures.clear()
            progress(label, sent / total)
    await nc.flush()
    await asyncio.gather(*futures)
    progress(label, 1.0)
    return sent


async def count_rows(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def wait_for_rows(
    conn: asyncpg.Connection,
    table: str,
    expected: int,
    progress: Progress,
    label: str,
    *,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll until `table` holds `expected` rows; returns the monotonic time at which it was seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} while filling {table}")
        done = await count_rows(conn, table)
        now = time.monotonic()
        progress(label, min(done / expected, 1.0))
        if done >= expected:
            return now
        if now > deadline:
            raise TimeoutError(f"{table}: {done} of {expected} rows after {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


async def prepublish(
    nats_client: NatsClient,
    events: Sequence[TransitionOfCareRecorded],
    progress: Progress,
    label: str,
    *,
    to_intake: bool = False,
) -> None:
    """The events on a fresh patient log, or (`to_intake`) sent to a fresh discharge intake as a hospital does."""
    nc = await nats_client.connect()
    try:
        js = nc.jetstream(publish_async_max_pending=PUBLISH_WINDOW)
        await fresh_patient_log(js)
        if to_intake:
            await delete_stream(js, DISCHARGE_INTAKE.name)
            await declare_stream(js, DISCHARGE_INTAKE, replicas=1, duplicate_window_s=PREPUBLISH_DUPLICATE_WINDOW_S)
        form = sent_by_hospital if to_intake else encoded
        await publish_all(nc, js, (form(e) for e in events), len(events), progress, label)
    finally:
        await nc.drain()


async def remove_streams(nats_client: NatsClient, names: Iterable[str]) -> None:
    nc = await nats_client.connect()
    try:
        js = nc.jetstream()
        for name in names:
            await delete_stream(js, name)
    finally:
        await nc.drain()


# --- the naive app --------------------------------------------------------------------------------------------


def naive_broker(nats_client: NatsClient, pool: asyncpg.Pool) -> NatsBroker:
    # Per-message logs at DEBUG, as the service configures its broker, so neither design pays for console output.
    broker = NatsBroker(**nats_client.broker_options(), log_level=logging.DEBUG)

    # FastStream warns that a durable push consumer does not scale out: that is the design under test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        subscriber = broker.subscriber(
            DISCHARGE_INTAKE_SUBJECT,
            stream=JStream(DISCHARGE_INTAKE.name, declare=False),
            durable=DURABLE,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NACK_ON_ERROR,
        )

    @subscriber
    async def on_transition_of_care_recorded(event: TransitionOfCareRecorded, message: NatsMessage) -> None:
        # The service's own work and tables (the discharge recorded and reconciled), one message and one
        # transaction at a time.
        caused = reconcile_now(event)
        async with pool.acquire() as conn, conn.transaction():
            uow = UnitOfWork(conn, RECONCILIATIONS)
            await uow.begin()
            await uow.record([event, *caused])

    return broker


async def run(servers: Infrastructure, events: list[TransitionOfCareRecorded], progress: Progress) -> dict[str, float]:
    """Pre-publish `events` to the intake, then time the naive app recording and reconciling all of them.

    The naive app is a design compared with mtm's, not a part of it: it runs as the admin, on NATS and Postgres.
    """
    n = len(events)
    db_name = f"bench_naive_{uuid.uuid4().hex[:8]}"
    admin, database_url = servers.nats_client(), servers.database_url
    try:
        await prepublish(admin, events, progress, "naive: publish", to_intake=True)
        url = await create_database(database_url, db_name)
        pool = await migrated_pool(url)
        try:
            broker = naive_broker(admin, pool)
            watcher = await projection_connection(url)
            try:
                started = time.monotonic()
                await broker.start()
                try:
                    done = await wait_for_rows(
                        watcher, "reconciliations", n, progress, "naive: project", timeout_s=max(120.0, n / 20)
                    )
                finally:
                    await broker.stop()
            finally:
                await watcher.close()
        finally:
            await pool.close()
    finally:
        await drop_database(database_url, db_name)
        await remove_streams(admin, [PATIENT_EVENTS_STREAM, DISCHARGE_INTAKE.name])
    return {"naive_events_per_s": n / (done - started)}


# --- the real service on the same events ----------------------------------------------------------------------


def start_service(servers: Infrastructure, database: str, log_path: Path) -> subprocess.Popen[bytes]:
    """The reconciliation service as `mtm up` runs it: its own NATS user and database role, its key-encryption
    key (it keeps the patients' event keys)."""
    env = {
        **os.environ,
        **servers.service_env("reconciliation", database),
        "MTM_LOG_LEVEL": "WARNING",
        "MTM_KEY_ENCRYPTION_KEY": BENCH_KEK,
    }
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "mtm.reconciliation"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_service(process: subprocess.Popen[bytes], *, timeout_s: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_for_consumer(
    js: JetStreamContext,
    durable: str,
    process: subprocess.Popen[bytes],
    *,
    timeout_s: float,
    stream: str = PATIENT_EVENTS_STREAM,
) -> float:
    """Monotonic time at which the service created its durable on `stream` (it starts pulling right after).

    With `MTM_CONSUMER_GROUPS` > 1 the durable is split into `<durable>-g<i>of<n>`; the first one counts.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(NotFoundError):
            if any(c.name.startswith(durable) for c in await js.consumers_info(stream)):
                return time.monotonic()
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with code {process.returncode} before creating {durable}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service did not create {durable} within {timeout_s:.0f} s")
        await asyncio.sleep(0.02)


async def run_service(
    servers: Infrastructure,
    events: list[TransitionOfCareRecorded],
    progress: Progress,
    *,
    log_dir: Path | None = None,
) -> dict[str, float]:
    """The real reconciliation service (`python -m mtm.reconciliation`) on the same pre-published events.

    `mtm_events_per_s` runs until every medication list is written (in the reconciliation's own transaction);
    `mtm_reconcile_events_per_s` stops at the reconciliations.
    """
    n = len(events)
    db_name = f"bench_mtm_{uuid.uuid4().hex[:8]}"
    log_path = (log_dir or Path(tempfile.gettempdir())) / f"{db_name}.log"
    process: subprocess.Popen[bytes] | None = None
    admin = servers.nats_client()
    try:
        await prepublish(admin, events, progress, "mtm: publish", to_intake=True)
        url = servers.service_database("reconciliation", db_name)
        process = start_service(servers, db_name, log_path)
        nc = await admin.connect()
        try:
            started = await wait_for_consumer(
                nc.jetstream(), SERVICE_DURABLE, process, timeout_s=60, stream=DISCHARGE_INTAKE.name
            )
        finally:
            await nc.drain()
        conn = await projection_connection(url)
        try:
            limit = max(120.0, n / 20)
            reconciled = await wait_for_rows(
                conn, "reconciliations", n, progress, "mtm: reconcile", timeout_s=limit, process=process
            )
            listed = await wait_for_rows(
                conn, "medication_lists", n, progress, "mtm: medication lists", timeout_s=limit, process=process
            )
        finally:
            await conn.close()
    finally:
        if process is not None:
            await asyncio.to_thread(stop_service, process)
        await drop_database(servers.database_url, db_name)
        await remove_streams(
            admin, [PATIENT_EVENTS_STREAM, DISCHARGE_INTAKE.name, dead_letter_stream("reconciliation")]
        )
    return {"mtm_events_per_s": n / (listed - started), "mtm_reconcile_events_per_s": n / (reconciled - started)}


async def _main(n: int) -> None:
    from bench.workload import transition_events
    from mtm.devstack.infra import resolve_infrastructure

    def show(label: str, fraction: float) -> None:
        print(f"\r{label:<28} {fraction:6.1%}", end="", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mtm-bench-naive-") as tmp:
        servers = resolve_infrastructure(Path(tmp), use_containers=False)
        try:
            events = list(transition_events(n))
            result = await run(servers, events, show)
            result |= await run_service(servers, events, show, log_dir=Path(tmp))
        finally:
            servers.stop()
    print(file=sys.stderr)
    for key, value in result.items():
        print(f"{key}: {value:,.0f} (N={n})")


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
