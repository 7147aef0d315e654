"""Rebuild the reconciliation projection from a cached log of 100,000 MedicationsReconciled events; events/s.

The rebuild is the one `mtm rebuild reconciliation` runs (the platform's Rebuilder with the service's projection
and reader): the log is sealed as in production (each event's data under its patient's key), read in batches,
opened, applied into a fresh schema, then the swap. Keys come from an in-process source here, as a service's
key ring would hold them after its first request to reconciliation.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.aio.client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bench.naive import MIGRATIONS, PROJECTION_MIGRATIONS, create_database, delete_stream, drop_database, publish_all
from bench.workload import synthea_transitions
from mtm.contracts import EVENTS, MedicationsReconciled
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_subject, patient_subject
from mtm.devstack.embedded import EmbeddedNats
from mtm.devstack.security import LocalSecurity
from mtm.platform.access import rebuild_reader_name
from mtm.platform.crypto import KeyRing, PatientKey, seal, unseal
from mtm.platform.db import apply_migrations, create_pool
from mtm.platform.projection import SEARCH_PATH
from mtm.platform.reading import EventReader
from mtm.platform.rebuild import APPLY_BATCH, LogReader, Rebuilder
from mtm.platform.runtime import GC_THRESHOLDS
from mtm.platform.streams import PATIENT_EVENTS, declare_stream
from mtm.reconciliation.adapters.reconciliations import RECONCILIATIONS
from mtm.reconciliation.application import SOURCE
from mtm.reconciliation.domain import reconcile

Progress = Callable[[str, float], None]

# Small enough that the rebuild runs to its swap within the phase's budget: a rate taken mid-replay would leave out
# the lists a rebuild writes once, at the end of the replay.
LOG_EVENTS = 100_000
PATIENTS = 10_000  # ten reconciliations per patient, so the projection folds each list over its history
FORMAT_VERSION = 4  # 2: sealed events; 3: 200,000 events; 4: 100,000 events
MARKER = "rebuild-log.json"
SAMPLE_S = 0.5
BUILD_WINDOW = 64  # confirms in flight; with CONFIRM_EVERY that is up to 6,400 messages
CONFIRM_EVERY = 100
# Deduplicating a million Nats-Msg-Ids over the service's 10 minutes would hold them all in server memory.
BUILD_DUPLICATE_WINDOW_S = 1.0
# The raw limits of the rebuild's own work, measured on the same log and table before it runs.
RAW_COPY_S = 2.0
RAW_READ_STALL_S = 10.0

# Placeholders serialized into each template and replaced per message; none can occur in real content.
_PATIENT = "zzbenchpatientzz"
_EVENT_ID = uuid.UUID("00000000-0000-4000-8000-00000000e0e1")
_TRANSITION_ID = uuid.UUID("00000000-0000-4000-8000-00000000e0e2")
_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _patient_id(p: int) -> str:
    return f"rb-{p}"


def _key(patient_id: str) -> PatientKey:
    """The patient's key, the same on every run, so a cached log stays readable."""
    digest = hashlib.sha256(f"mtm-bench-rebuild:{patient_id}".encode()).digest()
    return PatientKey(key_id=digest[:16].hex(), key=digest)


async def _keys(patient_ids: Sequence[str], create: bool) -> tuple[dict[str, PatientKey], set[str]]:
    return {p: _key(p) for p in patient_ids}, set()


@functools.cache
def _templates() -> list[bytes]:
    """One MedicationsReconciled body per Synthea transition, with placeholder ids, patient and time."""
    templates = []
    for transition in synthea_transitions():
        toc = transition.model_copy(update={"patient": transition.patient.model_copy(update={"patient_id": _PATIENT})})
        event = MedicationsReconciled.create(
            source=SOURCE,
            patient_id=_PATIENT,
            data=reconcile(toc, _TRANSITION_ID),
            correlation_id=_TRANSITION_ID,
            causation_id=_TRANSITION_ID,
            event_id=_EVENT_ID,
            time=_TIME,
        )
        templates.append(event.model_dump_json().encode())
    return templates


def _split(template: bytes, placeholders: tuple[bytes, ...]) -> list[bytes | int]:
    """The template as literal pieces and placeholder indexes, so a message is one join."""
    pieces: list[bytes | int] = [template]
    for index, placeholder in enumerate(placeholders):
        split: list[bytes | int] = []
        for piece in pieces:
            if isinstance(piece, int):
                split.append(piece)
                continue
            for n, part in enumerate(piece.split(placeholder)):
                if n:
                    split.append(index)
                split.append(part)
        pieces = split
    return pieces


def _messages(count: int) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    placeholders = (_PATIENT.encode(), str(_EVENT_ID).encode(), str(_TRANSITION_ID).encode(), b"2000-01-01T00:00:00Z")
    templates = [_split(t, placeholders) for t in _templates()]
    subjects = [patient_subject(_patient_id(p), MedicationsReconciled.EVENT_NAME) for p in range(PATIENTS)]
    patients = [_patient_id(p).encode() for p in range(PATIENTS)]
    keys = [_key(_patient_id(p)) for p in range(PATIENTS)]
    times = [
        (_TIME + timedelta(days=30 * k)).isoformat().replace("+00:00", "Z").encode()
        for k in range(count // PATIENTS + 1)
    ]
    # Ids share a per-build prefix and end in the message number: unique, and far cheaper than uuid4() per message.
    event_prefix, transition_prefix = str(uuid.uuid4())[:24].encode(), str(uuid.uuid4())[:24].encode()
    values: list[bytes] = [b""] * len(placeholders)
    for i in range(count):
        p = i % PATIENTS
        suffix = b"%012x" % i
        values[0] = patients[p]
        values[1] = event_prefix + suffix
        values[2] = transition_prefix + suffix
        values[3] = times[i // PATIENTS]
        body = b"".join([values[piece] if isinstance(piece, int) else piece for piece in templates[i % len(templates)]])
        event_id = values[1].decode()
        yield subjects[p], seal(body, uuid.UUID(event_id), keys[p]), {"Nats-Msg-Id": event_id}


def _sample_subject() -> str:
    """Subject of the log's first event under the current contracts; a cache built under others is rebuilt."""
    return patient_subject(_patient_id(0), MedicationsReconciled.EVENT_NAME)


def _check_template() -> None:
    """The first message must parse to the event its subject names, so the templating cannot drift from contracts."""
    subject, body, _ = next(_messages(1))
    event = MedicationsReconciled.model_validate_json(unseal(body, _key(_patient_id(0))))
    if event_subject(event) != subject or subject != _sample_subject():
        raise AssertionError(f"template yields {event_subject(event)}, published as {subject}")


def _read_marker(cache_dir: Path) -> dict[str, object]:
    try:
        return dict(json.loads((cache_dir / MARKER).read_text()))
    except (OSError, ValueError):
        return {}


async def _cached_log_is_current(js: JetStreamContext, cache_dir: Path, sample_subject: str) -> bool:
    marker = _read_marker(cache_dir)
    if marker.get("format") != FORMAT_VERSION or marker.get("sample_subject") != sample_subject:
        return False
    try:
        info = await js.stream_info(PATIENT_EVENTS_STREAM)
        first = await js.get_msg(PATIENT_EVENTS_STREAM, seq=1)
    except NotFoundError:
        return False
    return info.state.messages == LOG_EVENTS and first.subject == sample_subject


async def ensure_log(nc: nats.aio.client.Client, js: JetStreamContext, cache_dir: Path, progress: Progress) -> float:
    """Reuse the cached log when it matches the current contracts, else build it; returns the build time or 0."""
    sample_subject = _sample_subject()
    if await _cached_log_is_current(js, cache_dir, sample_subject):
        progress("rebuild: log (cached)", 1.0)
        return 0.0
    (cache_dir / MARKER).unlink(missing_ok=True)
    started = time.monotonic()
    _check_template()
    await delete_stream(js, PATIENT_EVENTS_STREAM)
    await declare_stream(js, PATIENT_EVENTS, replicas=1, duplicate_window_s=BUILD_DUPLICATE_WINDOW_S)
    await publish_all(
        nc,
        js,
        _messages(LOG_EVENTS),
        LOG_EVENTS,
        progress,
        "rebuild: build log",
        chunk=20_000,
        confirm_every=CONFIRM_EVERY,
    )
    stored = (await js.stream_info(PATIENT_EVENTS_STREAM)).state.messages
    if stored != LOG_EVENTS:
        raise RuntimeError(f"the log holds {stored} of {LOG_EVENTS} events after the build")
    elapsed = time.monotonic() - started
    marker = {"format": FORMAT_VERSION, "sample_subject": sample_subject, "events": LOG_EVENTS, "build_s": elapsed}
    (cache_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return elapsed


async def _replay(js: JetStreamContext, url: str, progress: Progress, *, budget_s: float) -> dict[str, float]:
    """Run the projection's rebuild until it swapped or `budget_s` ran out; the rate over what it applied."""
    samples: list[tuple[float, int]] = []

    async def sample(phase: str, applied: int, total: int, rate: float, message: str) -> None:
        samples.append((time.monotonic(), applied))
        progress("rebuild: replay", applied / total if total else 0.0)

    rebuilder = Rebuilder(
        database_url=url,
        js=js,
        projection=RECONCILIATIONS,
        scopes=PROJECTION_MIGRATIONS[0][1],
        reader=EventReader(EVENTS, KeyRing(_keys)),
        reader_name=rebuild_reader_name("reconciliation"),
        progress=sample,
    )
    # The service process runs with the collector tuned and its start-up heap frozen (`serve`); so does this.
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
    started = time.monotonic()
    # The rebuild runs in this process: its CPU per event is the figure that does not depend on the neighbours' load.
    cpu_started = time.process_time()
    completed = False
    try:
        result = await asyncio.wait_for(rebuilder.run(), timeout=budget_s)
        completed = True
        samples.append((started + result.seconds, result.read))
    except TimeoutError:
        pass
    cpu_s = time.process_time() - cpu_started
    moving = [s for s in samples if s[1] > 0]
    if len(moving) < 2 and not completed:
        raise RuntimeError(f"the rebuild applied nothing within {budget_s:.0f} s")
    first = (started, 0)
    last = max(samples, key=lambda s: s[1])
    return {
        "rebuild_events_per_s": (last[1] - first[1]) / (last[0] - first[0]),
        "rebuild_events": float(last[1]),
        "rebuild_completed": 1.0 if completed else 0.0,
        "rebuild_cpu_us_per_event": cpu_s / last[1] * 1e6 if last[1] else 0.0,
    }


async def raw_read(js: JetStreamContext, progress: Progress) -> dict[str, float]:
    """The log read as the rebuild reads it (its reader, batches and read-ahead), nothing done with what arrives:
    the rate no rebuild through NATS can pass on this machine, and this process's CPU per event for it."""

    async def nothing(messages: Sequence[object]) -> list[None]:
        return [None] * len(messages)

    reader = LogReader(js, RECONCILIATIONS.replayed, rebuild_reader_name("reconciliation"), nothing)
    try:
        total = await reader.start()
        started, cpu_started = time.monotonic(), time.process_time()
        last_moved = started
        while reader.delivered < total:
            if await reader.take(APPLY_BATCH, wait_s=0.2):
                last_moved = time.monotonic()
            elif time.monotonic() - last_moved > RAW_READ_STALL_S:
                raise RuntimeError(f"raw read: {reader.delivered} of {total} events, then nothing")
            progress("rebuild: raw read", reader.delivered / total)
        seconds, cpu_s = time.monotonic() - started, time.process_time() - cpu_started
    finally:
        await reader.stop()
    return {
        "raw_rebuild_read_per_s": round(reader.delivered / seconds, 1),
        "raw_rebuild_read_cpu_us_per_event": round(cpu_s / reader.delivered * 1e6, 1),
    }


COPY_COLUMNS = (
    "event_id",
    "transition_event_id",
    "patient_id",
    "item_count",
    "discrepancy_count",
    "medications_reconciled",
    "reconciled_at",
)


async def raw_copy(pool: Any, progress: Progress) -> dict[str, float]:
    """Rows a second COPY writes into a table shaped as the projection's `reconciliations`, each holding an event
    of the log (its clear JSON, as the rebuild stores it), in batches the size the rebuild applies, one
    transaction each: the rate no rebuild that keeps every event's row can pass."""
    bodies = [t.decode() for t in _templates()]
    copied = 0
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE raw_reconciliations (LIKE reconciliations INCLUDING ALL)")
        try:
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < RAW_COPY_S:
                rows = [
                    (uuid.uuid4(), uuid.uuid4(), _patient_id(n % PATIENTS), 10, 1, bodies[n % len(bodies)], _TIME)
                    for n in range(copied, copied + APPLY_BATCH)
                ]
                async with conn.transaction():
                    await conn.copy_records_to_table("raw_reconciliations", records=rows, columns=COPY_COLUMNS)
                copied += len(rows)
                progress("rebuild: raw COPY", elapsed / RAW_COPY_S)
            seconds = time.monotonic() - started
        finally:
            await conn.execute("DROP TABLE raw_reconciliations")
    return {"raw_rebuild_copy_rows_per_s": round(copied / seconds, 1)}


async def run(cache_dir: Path, database_url: str, progress: Progress, *, budget_s: float) -> dict[str, float]:
    """Rebuild the reconciliation projection from the cached patient log until done or `budget_s` ran out."""
    # Starting the server creates the cache directory; it blocks until the port answers.
    # The cached log's server keeps its users' passwords beside it, from one run to the next.
    server = EmbeddedNats(cache_dir / "rebuild-nats", LocalSecurity(cache_dir / "rebuild-security"))
    server = await asyncio.to_thread(server.start)
    db_name = f"bench_rebuild_{uuid.uuid4().hex[:8]}"
    try:
        nc = await server.client().connect()
        try:
            js = nc.jetstream(publish_async_max_pending=BUILD_WINDOW)
            build_s = await ensure_log(nc, js, cache_dir, progress)
            state = (await js.stream_info(PATIENT_EVENTS_STREAM)).state
            url = await create_database(database_url, db_name)
            pool = await create_pool(url, search_path=SEARCH_PATH)
            try:
                await apply_migrations(pool, MIGRATIONS, PROJECTION_MIGRATIONS)
                raw = await raw_copy(pool, progress)
            finally:
                await pool.close()
            raw |= await raw_read(js, progress)
            result = await _replay(js, url, progress, budget_s=budget_s)
        finally:
            await nc.drain()
    finally:
        await asyncio.to_thread(server.stop)
        await drop_database(database_url, db_name)
    return (
        result
        | raw
        | {
            "rebuild_log_events": float(state.messages),
            "rebuild_log_bytes": float(state.bytes),
            "rebuild_log_build_s": build_s,
        }
    )


async def _main(budget_s: float, cache_dir: Path) -> None:
    import tempfile

    from mtm.devstack.embedded import EmbeddedPostgres

    def show(label: str, fraction: float) -> None:
        print(f"\r{label:<28} {fraction:6.1%}", end="", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mtm-bench-rebuild-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg", LocalSecurity(Path(tmp) / "security")).start()
        try:
            result = await run(cache_dir, postgres.url, show, budget_s=budget_s)
        finally:
            postgres.stop()
    print(file=sys.stderr)
    for key, value in result.items():
        print(f"{key}: {value:,.1f}")


if __name__ == "__main__":
    import tempfile

    asyncio.run(
        _main(
            float(sys.argv[1]) if len(sys.argv) > 1 else 120.0,
            Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.gettempdir()) / "mtm-bench-cache",
        )
    )
