"""Benchmark the DUR engine: bundled KB load time and median check time for a 20-medication patient."""

from __future__ import annotations

import statistics
import time
import timeit

from mtm.contracts import Allergy, Condition
from mtm.review.domain.dur import CheckedMedication, PatientContext, check
from mtm.review.knowledge import BUNDLED_DIRECTORY, load_from_directory

REGIMEN: list[tuple[tuple[str, ...], float | None, float]] = [
    (("warfarin",), 5, 1),
    (("amiodarone",), 200, 1),
    (("digoxin",), 0.25, 1),
    (("metoprolol",), 100, 2),
    (("lisinopril",), 20, 1),
    (("spironolactone",), 25, 1),
    (("furosemide",), 40, 1),
    (("atorvastatin",), 40, 1),
    (("metformin",), 2000, 2),
    (("glyburide",), 5, 1),
    (("omeprazole",), 20, 1),
    (("sertraline",), 100, 1),
    (("tramadol",), 200, 4),
    (("acetaminophen", "hydrocodone"), 2600, 4),
    (("ibuprofen",), 1200, 3),
    (("lorazepam",), 1, 1),
    (("diphenhydramine",), 50, 1),
    (("allopurinol",), 300, 1),
    (("sulfamethoxazole", "trimethoprim"), 1600, 2),
    (("clopidogrel",), 75, 1),
]


def build_patient() -> tuple[PatientContext, list[CheckedMedication]]:
    context = PatientContext(
        age_years=79,
        sex="female",
        weight_kg=62,
        egfr=38,
        conditions=(
            Condition(system="http://snomed.info/sct", code="88805009", text="Chronic congestive heart failure"),
            Condition(system="http://hl7.org/fhir/sid/icd-10-cm", code="K25.9", text="Gastric ulcer"),
            Condition(text="Atrial fibrillation"),
        ),
        allergies=(Allergy(text="Penicillin"), Allergy(text="Sulfa drugs")),
        pgx={"CYP2C19": "Poor metabolizer", "CYP2C9": "Intermediate metabolizer"},
        hla={"HLA-B*58:01": "negative"},
    )
    medications = [
        CheckedMedication(
            ingredients=ingredients,
            text=" / ".join(ingredients),
            daily_amounts={ingredients[0]: (amount, "mg")} if amount is not None else {},
            frequency_per_day=per_day,
            route="oral",
        )
        for ingredients, amount, per_day in REGIMEN
    ]
    return context, medications


def main() -> None:
    load_times = []
    for _ in range(5):
        started = time.perf_counter()
        kb = load_from_directory(BUNDLED_DIRECTORY)
        load_times.append(time.perf_counter() - started)
    context, medications = build_patient()
    alerts = check(context, medications, kb)
    runs = timeit.repeat(lambda: check(context, medications, kb), number=100, repeat=30)
    per_check_ms = [run / 100 * 1000 for run in runs]
    print(f"KB version {kb.version}: {len(kb.interactions)} interaction pairs, rule counts {dict(kb.rule_counts)}")
    print(f"KB load (bundled, from CSV): median {statistics.median(load_times) * 1000:.0f} ms over 5 loads")
    median_ms = statistics.median(per_check_ms)
    print(f"check() on {len(medications)} medications ({len(alerts)} alerts): median {median_ms:.3f} ms")
    vocabulary_figures()


def vocabulary_figures() -> None:
    """The drug vocabulary (mtm.drugs): loading it, and resolving a medication's text to its ingredients."""
    from mtm.drugs import resolve
    from mtm.drugs.vocabulary import vocabulary

    loads = []
    for _ in range(5):
        vocabulary.cache_clear()
        started = time.perf_counter()
        vocabulary()
        loads.append(time.perf_counter() - started)
    texts = [f"Simvastatin {dose} MG Oral Tablet" for dose in range(1, 201)]
    started = time.perf_counter()
    for text in texts:
        resolve(text)
    first = (time.perf_counter() - started) / len(texts)
    started = time.perf_counter()
    for text in texts:
        resolve(text)
    again = (time.perf_counter() - started) / len(texts)
    print(f"drug vocabulary load: median {statistics.median(loads) * 1000:.0f} ms over 5 loads")
    print(f"resolve(text): {first * 1e6:.0f} µs first time, {again * 1e6:.1f} µs cached")


if __name__ == "__main__":
    main()
