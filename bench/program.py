"""The MTM program's figures: a targeting (and adherence) sweep over 100,000 patients, and pharmacy fill ingestion."""

from __future__ import annotations

import random
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.harness import Encoded, Progress, Servers

SWEEP_PATIENTS = 100_000
FILLS = 5_000
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


def run_sweep(progress: Progress, count: int = SWEEP_PATIENTS) -> dict[str, Any]:
    """Every patient through targeting, then every patient's fills through PDC; patients per second of each."""
    from mtm.program.domain.adherence import measure
    from mtm.program.domain.targeting import determine
    from mtm.program.tables import adherence_tables, targeting_tables

    progress(f"building {count:,} patients", 0.05)
    patients = synthetic_patients(count)
    tables, pdc_tables = targeting_tables(), adherence_tables()
    progress("targeting", 0.4)
    started = time.perf_counter()
    eligible = sum(determine(t, as_of=AS_OF, tables=tables).eligible for t, _ in patients)
    targeting_s = time.perf_counter() - started
    progress("adherence", 0.7)
    started = time.perf_counter()
    below = sum(bool(measure(f, year=AS_OF.year, as_of=AS_OF, tables=pdc_tables).below_threshold) for _, f in patients)
    adherence_s = time.perf_counter() - started
    progress("done", 1.0)
    return {
        "targeting_patients_per_s": round(count / targeting_s, 1),
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


async def run_fill_ingestion(servers: Servers, log_dir: Path, progress: Progress) -> dict[str, Any]:
    """The reconciliation service alone on pre-published fills: fills/s until every one is on the patient log
    (validated, resolved through mtm.drugs, on the medication list, MedicationDispensed in the outbox)."""
    from bench.e2e import run_alone
    from mtm.contracts import MedicationDispensed
    from mtm.platform.streams import FILL_INTAKE, PATIENT_EVENTS

    messages = fill_messages()
    run = await run_alone(
        servers, log_dir, messages, progress, phase="fills", streams=(PATIENT_EVENTS, FILL_INTAKE),
        counted=MedicationDispensed,
    )  # fmt: skip
    return {"fill_ingestion_per_s": run.rate, "fill_ingestion_fills": len(messages)}
