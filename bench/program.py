"""The MTM program's figures: a targeting sweep over 1,000,000 members, PDC over 100,000, and fill ingestion."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.harness import Encoded, Progress, Servers

SWEEP_PATIENTS = 100_000
# The targeting sweep's members: the distinct patients ten times over. Building a patient costs ~100 µs and ~7 kB,
# ten times what targeting one costs, so 1,000,000 distinct ones would take minutes and gigabytes; targeting keeps
# nothing per member between calls (only the tables' codes), so a repeated patient is no cheaper than a new one.
SWEEP_MEMBERS = 1_000_000
# Enough that start-up (imports, migrations, first fetches) is a small part of the figure.
FILLS = 20_000
AS_OF = date(2025, 9, 30)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
# Codes of every core chronic disease and some that are none (so most patients are not eligible, as in a plan).
CONDITION_CODES = ("E11.9", "I10", "E78.5", "I50.9", "J44.9", "J45.909", "F32.9", "M81.0", "G30.9", "N18.6",
                   "B20", "K21.9", "R51.9", "Z79.4")  # fmt: skip
DRUGS = ("atorvastatin", "lisinopril", "metformin", "amlodipine", "metoprolol", "levothyroxine", "omeprazole",
         "sertraline", "losartan", "simvastatin", "furosemide", "gabapentin", "sitagliptin", "tamsulosin",
         "warfarin", "apixaban", "insulin glargine", "albuterol", "fluticasone", "donepezil")  # fmt: skip


def synthetic_patients(count: int, seed: int = 9) -> list[Any]:
    """Reproducible patients: 0-5 conditions, 0-12 current drugs, up to a year of fills, some with claim costs."""
    from mtm.program.domain.adherence import DispensedFill
    from mtm.program.domain.targeting import ConditionFact, FillFact, MedicationFact, TargetingInput

    rng = random.Random(seed)
    patients = []
    for _ in range(count):
        conditions = [ConditionFact(ICD, code, "active") for code in rng.sample(CONDITION_CODES, rng.randint(0, 5))]
        drugs = rng.sample(DRUGS, rng.randint(0, 12))
        fills = []
        for drug in drugs[: rng.randint(0, len(drugs))]:
            day = AS_OF - timedelta(days=rng.randint(200, 360))
            while day <= AS_OF:
                fills.append((drug, day, 30, rng.choice((None, 12.5, 48.0))))
                day += timedelta(days=rng.randint(25, 45))
        targeting = TargetingInput(
            conditions=conditions,
            medications=[MedicationFact(d) for d in drugs],
            fills=[FillFact(d, on, days, cost) for d, on, days, cost in fills],
            drug_management_program_at_risk=rng.random() < 0.01,
        )
        patients.append((targeting, [DispensedFill((d,), on, days) for d, on, days, _ in fills]))
    return patients


def run_sweep(progress: Progress, count: int = SWEEP_PATIENTS, members: int = SWEEP_MEMBERS) -> dict[str, Any]:
    """The targeting sweep over `members` (determinations of the targeted ones), a determination of each of the
    `count` patients (what the service records per evaluation), then every patient's fills through PDC; per second."""
    from mtm.program.domain.adherence import measure
    from mtm.program.domain.targeting import determine, screen
    from mtm.program.tables import adherence_tables, targeting_tables

    progress(f"building {count:,} patients", 0.05)
    patients = synthetic_patients(count)
    tables, pdc_tables = targeting_tables(), adherence_tables()
    progress(f"targeting {members:,} members", 0.3)
    targeted = 0
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(members):
        screening = screen(patients[n % count][0], as_of=AS_OF, tables=tables)
        if screening.eligible:
            targeted += screening.determination().eligible
    targeting_s, targeting_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    progress("a determination of each patient", 0.6)
    started = time.perf_counter()
    eligible = sum(determine(t, as_of=AS_OF, tables=tables).eligible for t, _ in patients)
    determination_s = time.perf_counter() - started
    progress("adherence", 0.7)
    started = time.perf_counter()
    below = sum(bool(measure(f, year=AS_OF.year, as_of=AS_OF, tables=pdc_tables).below_threshold) for _, f in patients)
    adherence_s = time.perf_counter() - started
    progress("done", 1.0)
    return {
        "targeting_members_per_s": round(members / targeting_s, 1),
        "targeting_cpu_us_per_member": round(targeting_cpu_s / members * 1e6, 2),
        "targeting_sweep_members": members,
        "targeting_sweep_targeted": targeted,
        "targeting_determinations_per_s": round(count / determination_s, 1),
        "targeting_sweep_patients": count,
        "targeting_sweep_eligible": eligible,
        "adherence_patients_per_s": round(count / adherence_s, 1),
        "adherence_sweep_below_80": below,
    }


def fill_messages(count: int = FILLS) -> list[Encoded]:
    """Native MedicationDispensed fills as a pharmacy publishes them on the fill intake, text to be resolved."""
    from mtm.contracts import MedicationDispensed, MedicationEntry
    from mtm.contracts.program import Dispense
    from mtm.contracts.subjects import FILL_INTAKE_SUBJECT

    rng = random.Random(11)
    messages = []
    for n in range(count):
        drug = rng.choice(DRUGS)
        event = MedicationDispensed.create(
            source="bench/pharmacy",
            patient_id=f"bench-{n % 1000}",
            data=Dispense(
                dispense_id=f"rx-{n}",
                medication=MedicationEntry(text=f"{drug.title()} 10 MG Oral Tablet"),
                days_supply=30,
                filled_on=AS_OF - timedelta(days=rng.randint(0, 300)),
            ),
            event_id=uuid.UUID(int=n + 1),
        )
        messages.append((FILL_INTAKE_SUBJECT, event.model_dump_json().encode(), {"Nats-Msg-Id": str(event.id)}))
    return messages


async def run_fill_ingestion(
    servers: Servers, log_dir: Path, progress: Progress, *, count: int = FILLS
) -> dict[str, Any]:
    """The reconciliation and program services on pre-published fills: fills/s until every one is in the program's
    adherence projection (validated, resolved through mtm.drugs, on the medication list, MedicationDispensed on the
    patient log, then a row of the program's fills, the input of its PDC measure), and the CPU each process spent
    per fill meanwhile; the rate to the patient log alone is reported beside it.

    The steady figure and the CPU per fill are taken once the first tenth of the fills is projected: the services'
    start-up (imports, migrations, first fetches) is not what a feed of millions of fills a day costs; the figure
    from start-up (the first service logging that it started) is reported beside it. The program's evaluation timer
    runs as in production, so its CPU counts.
    """
    from bench.e2e import EventCounter
    from bench.harness import (
        NO_TRAFFIC,
        ResourceSampler,
        ServiceFleet,
        jetstream_traffic,
        publish_windowed,
        running_fleet,
    )
    from mtm.contracts import MedicationDispensed
    from mtm.platform.streams import FILL_INTAKE, PATIENT_EVENTS, declare_stream

    messages = fill_messages(count)
    total = len(messages)
    async with servers.nats("fills") as on_phase:
        nc = await on_phase.nats_client().connect()
        try:
            js = nc.jetstream()
            # Declared exactly as their owner, the reconciliation service, declares them.
            for spec in (PATIENT_EVENTS, FILL_INTAKE):
                await declare_stream(js, spec, replicas=1, duplicate_window_s=600.0)
            await publish_windowed(js, messages, lambda sent: progress("pre-publishing", 0.2 * sent / total))
            on_log = EventCounter()
            await on_log.subscribe(nc, MedicationDispensed)
            fleet = ServiceFleet(on_phase, servers, "fills", log_dir, services=("reconciliation", "program"))
            async with running_fleet(fleet, ready=False):
                sampler = ResourceSampler(fleet.pids(), servers.server_pids())
                sampler.start()
                # From start-up, unless the count is seen between the warm-up and the end (it always is but for
                # a run too short to measure).
                warm: dict[str, float] = {}

                def warmed(count: int) -> None:
                    warm.update(count=count, at=time.monotonic())
                    sampler.begin_cpu_window()

                try:
                    started = await _first_started(fleet, on_log)
                    warm.update(count=0, at=started)
                    sampler.begin_cpu_window()
                    projected = await _wait_projected(
                        fleet, total, on_log, progress, warm_up=total // 10, warmed=warmed
                    )
                    finished = time.monotonic()
                    cpu = sampler.cpu_seconds_used()
                    # The whole phase, every fill from its intake to the program: the streams were fresh.
                    traffic = (await jetstream_traffic(js)).per(NO_TRAFFIC, total)
                    sampler.sample_rss()
                finally:
                    await sampler.stop()
        finally:
            await nc.drain()
    progress("done", 1.0)
    steady_s, steady_fills = finished - warm["at"], projected - warm["count"]
    to_log = (on_log.last_at or finished) - started
    return {
        "fill_ingestion_per_s": round(steady_fills / steady_s, 1),
        "fill_ingestion_from_start_per_s": round(projected / (finished - started), 1),
        "fill_ingestion_to_log_per_s": round(total / to_log, 1),
        "fill_ingestion_fills": total,
        "fill_ingestion_measured_fills": steady_fills,
        "fill_ingestion_s": round(finished - started, 2),
        "fill_ingestion_cpu_ms_per_fill": {
            name: round(seconds / steady_fills * 1000, 4) for name, seconds in cpu.items()
        },
        "fill_ingestion_nats_per_fill": traffic,
        "fill_ingestion_rss_mb": {name: round(mb, 1) for name, mb in sampler.max_rss_mb.items()},
    }


async def _first_started(fleet: Any, on_log: Any) -> float:
    """When the first service logged that it started (or the first fill reached the log, if earlier)."""
    waits = [asyncio.ensure_future(fleet.wait_for_log(name, "service started")) for name in fleet.processes]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        started = min(task.result() for task in done)
    finally:
        for task in waits:
            task.cancel()
    return min(started, on_log.first_at or started)


async def _wait_projected(fleet: Any, total: int, on_log: Any, progress: Progress, *, warm_up: int, warmed: Any) -> int:
    """Poll the program's fills table (its live schema, as the service reads it) until it holds every fill;
    `warmed(count)` is called once, when it first holds `warm_up` fills (but not all of them)."""
    import asyncpg

    from bench.e2e import STALL_S
    from bench.harness import PhaseFailed
    from mtm.platform.projection import SEARCH_PATH

    # The tables exist once the program has started (it migrates first).
    await fleet.wait_for_log("program", "service started")
    conn = await asyncpg.connect(fleet.database_url("program"), server_settings={"search_path": SEARCH_PATH})
    try:
        projected, last_change = 0, time.monotonic()
        while projected < total:
            fleet.check_alive()
            count = await conn.fetchval("SELECT count(*) FROM fills")
            if count != projected:
                if projected < warm_up <= count < total:
                    warmed(count)
                projected, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                raise PhaseFailed(
                    f"fills: {projected} of {total} projected ({on_log.count} on the log), then nothing for "
                    f"{STALL_S:.0f} s; logs: {fleet.log_dir}"
                )
            progress(f"projected {projected:,}/{total:,} ({on_log.count:,} on the log)", 0.2 + 0.8 * projected / total)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return projected
