"""The reconciliation projection on `eventsourcing` (PostgreSQL): an event-sourced projection following the log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.projection import EventSourcedProjection, EventSourcedProjectionRunner
from eventsourcing.utils import get_topic

from bench.naive import create_database, drop_database
from mtm.contracts import MedicationsReconciled, TransitionOfCareRecorded
from mtm.reconciliation.application import reconcile_now
from mtm.reconciliation.domain import MedicationList, apply_to_medication_list

Progress = Callable[[str, float], None]

_NAMESPACE = uuid.UUID("6b0f1d52-3c1e-4a8e-9d07-5f2a8c1e4b39")
POLL_S = 0.2


class Patient(Aggregate):
    """Upstream: every transition of care of one patient, as the discharge systems reported them."""

    @staticmethod
    def create_id(patient_id: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"patient:{patient_id}")

    @event("Registered")
    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self.discharges = 0

    @event("TransitionOfCareRecorded")
    def record_transition(self, event_json: str) -> None:
        # The whole contract event is kept, so the projection decodes exactly what mtm's consumer decodes.
        self.discharges += 1


class Discharges(Application[uuid.UUID]):
    def record(self, toc: TransitionOfCareRecorded) -> int:
        """Record one transition of care; returns its notification id."""
        try:
            patient: Patient = self.repository.get(Patient.create_id(toc.patient_id))
        except AggregateNotFoundError:
            patient = Patient(toc.patient_id)
        patient.record_transition(toc.model_dump_json())
        return self.save(patient)[-1].notification.id


class PatientMedications(Aggregate):
    """Downstream: the personal medication list, event-sourced from the patient's MedicationsReconciled events."""

    @staticmethod
    def create_id(patient_id: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"medication-list:{patient_id}")

    @event("Opened")
    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self.medication_list: MedicationList | None = None

    @event("MedicationsReconciled")
    def reconciled(self, event_json: str) -> None:
        # Runs when the event is triggered and on every reload, as in any event-sourced aggregate; the event is
        # the contract's MedicationsReconciled JSON, the same bytes mtm's outbox relays and its list consumer parses.
        out = MedicationsReconciled.model_validate_json(event_json)
        self.medication_list = apply_to_medication_list(
            self.medication_list, out.data, event_id=out.id, recorded_at=out.time
        )


class ReconciliationProjection(EventSourcedProjection[uuid.UUID]):
    """Reconciles each recorded transition; its own log (the aggregate events) is what downstream apps follow."""

    topics = (get_topic(Patient.TransitionOfCareRecorded),)  # type: ignore[attr-defined]

    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[uuid.UUID]) -> None:
        toc = TransitionOfCareRecorded.model_validate_json(domain_event.event_json)
        (out,) = reconcile_now(toc)
        try:
            medications: PatientMedications = self.repository.get(PatientMedications.create_id(toc.patient_id))
        except AggregateNotFoundError:
            medications = PatientMedications(toc.patient_id)
        medications.reconciled(out.model_dump_json())
        processing_event.collect_events(medications)


def eventsourcing_env(server_url: str, dbname: str) -> dict[str, str]:
    parts = urlsplit(server_url)
    query = dict(parse_qsl(parts.query))  # a Unix socket is given as `?host=<directory>&port=<port>`
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname or query.get("host") or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or query.get("port") or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        # eventsourcing refuses a missing password; an empty one is fine with trust auth.
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }


def _record_all(env: dict[str, str], events: list[TransitionOfCareRecorded], report: Callable[[float], None]) -> int:
    app = Discharges(env=env)
    try:
        last = 0
        step = max(1, len(events) // 100)
        for n, toc in enumerate(events, 1):
            last = app.record(toc)
            if n % step == 0:
                report(n / len(events))
        return last
    finally:
        app.close()


def _catch_up(env: dict[str, str], last: int, report: Callable[[float], None]) -> float:
    """Follow Discharges from the start until notification `last` is processed; returns when that was seen."""
    with EventSourcedProjectionRunner(
        application_class=Discharges, projection_class=ReconciliationProjection, env=env
    ) as runner:
        while True:
            try:
                runner.wait(last, timeout=POLL_S)
            except TimeoutError:
                report((runner.projection.recorder.max_tracking_id(runner.app_name) or 0) / last)
                continue
            caught_up = time.monotonic()
            report(1.0)
            return caught_up


@contextlib.contextmanager
def libpq_tls(server_url: str) -> Iterator[None]:
    """eventsourcing has no TLS setting of its own; libpq (under psycopg) takes the URL's from its environment."""
    query = dict(parse_qsl(urlsplit(server_url).query))
    wanted = {"PGSSLMODE": query.get("sslmode"), "PGSSLROOTCERT": query.get("sslrootcert")}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update({name: value for name, value in wanted.items() if value is not None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def run(database_url: str, events: list[TransitionOfCareRecorded], progress: Progress) -> dict[str, float]:
    """Record every transition upstream, then the projection catching up from nothing; both are timed."""
    db_name = f"bench_peer_{uuid.uuid4().hex[:8]}"
    await create_database(database_url, db_name)
    env = eventsourcing_env(database_url, db_name)
    with libpq_tls(database_url):
        return await _timed(database_url, db_name, env, events, progress)


async def _timed(
    database_url: str, db_name: str, env: dict[str, str], events: list[TransitionOfCareRecorded], progress: Progress
) -> dict[str, float]:
    n = len(events)
    try:
        loop = asyncio.get_running_loop()

        def reporter(label: str) -> Callable[[float], None]:
            return lambda fraction: loop.call_soon_threadsafe(progress, label, fraction)

        t0 = time.monotonic()
        last = await asyncio.to_thread(_record_all, env, events, reporter("peer: record"))
        recorded = time.monotonic() - t0

        started = time.monotonic()
        caught_up = await asyncio.to_thread(_catch_up, env, last, reporter("peer: project"))
    finally:
        await drop_database(database_url, db_name)
    # Compared with the service, which records and reconciles each discharge it takes in: both steps, timed.
    return {
        "peer_events_per_s": n / (recorded + caught_up - started),
        "peer_record_events_per_s": n / recorded,
        "peer_projection_events_per_s": n / (caught_up - started),
    }


async def _main(n: int) -> None:
    import tempfile

    from bench.workload import transition_events
    from mtm.devstack.embedded import EmbeddedPostgres
    from mtm.devstack.security import LocalSecurity

    def show(label: str, fraction: float) -> None:
        print(f"\r{label:<28} {fraction:6.1%}", end="", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="mtm-bench-peer-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg", LocalSecurity(Path(tmp) / "security")).start()
        try:
            result = await run(postgres.url, list(transition_events(n)), show)
        finally:
            postgres.stop()
    print(file=sys.stderr)
    for key, value in result.items():
        print(f"{key}: {value:,.0f} (N={n})")


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
