"""MAP rendering: a CMR's action plan and 12-medication list as PDF, HTML and FHIR, documents per second."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from mtm.contracts.documentation import ActionPlanDocument, ActionPlanItem, PersonalMedication, PlannedFollowUp

# Twelve of the most prescribed drugs, each with its patient education page: a typical CMR member's list.
REGIMEN = (
    ("Atorvastatin 40 mg tablet", "atorvastatin", "1 tablet by mouth every evening", "Cholesterol"),
    ("Metformin 1000 mg tablet", "metformin", "1 tablet by mouth twice a day with meals", "Diabetes"),
    ("Lisinopril 20 mg tablet", "lisinopril", "1 tablet by mouth every morning", "Blood pressure"),
    ("Amlodipine 5 mg tablet", "amlodipine", "1 tablet by mouth every day", "Blood pressure"),
    ("Metoprolol succinate 50 mg tablet", "metoprolol", "1 tablet by mouth every morning", "Heart"),
    ("Apixaban 5 mg tablet", "apixaban", "1 tablet by mouth twice a day", "Atrial fibrillation"),
    ("Furosemide 40 mg tablet", "furosemide", "1 tablet by mouth every morning", "Swelling"),
    ("Levothyroxine 75 mcg tablet", "levothyroxine", "1 tablet before breakfast", "Thyroid"),
    ("Sertraline 50 mg tablet", "sertraline", "1 tablet by mouth every day", "Mood"),
    ("Omeprazole 20 mg capsule", "omeprazole", "1 capsule before breakfast", "Heartburn"),
    ("Gabapentin 300 mg capsule", "gabapentin", "1 capsule at bedtime", "Nerve pain"),
    ("Albuterol inhaler", "albuterol", "2 puffs when short of breath", "Breathing"),
)


def document() -> ActionPlanDocument:
    today = date(2026, 11, 20)
    return ActionPlanDocument(
        patient_id="bench-member",
        task_id=uuid.UUID(int=1),
        pharmacist_id="rph-bench",
        performed_on=today,
        delivery_method="face-to-face",
        recipient="beneficiary",
        provider_type="local-pharmacist",
        action_plan=tuple(
            ActionPlanItem(topic=f"Topic {n}", steps=("Take it every morning.", "Bring your log to the next visit."))
            for n in range(4)
        ),
        medications=tuple(
            PersonalMedication(
                name=name,
                ingredients=(ingredient,),
                how_i_use_it=how,
                why_i_use_it=why,
                prescriber="Dr. Okafor",
                started=today - timedelta(days=400),
            )
            for name, ingredient, how, why in REGIMEN
        ),
        allergies=("Penicillin (rash)",),
        follow_ups=(PlannedFollowUp(due=today + timedelta(days=30), reason="Blood pressure log"),),
        deliver_by=today + timedelta(days=14),
    )


def _rate(render: Callable[[], Any], seconds: float) -> float:
    render()  # templates, fonts and education loaded before the clock starts
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        render()
        done += 1
    return done / elapsed


def run(seconds_each: float = 3.0) -> dict[str, Any]:
    from mtm.documents import render_html, render_pdf
    from mtm.fhir.export import action_plan_bundle

    doc = document()
    return {
        "map_pdf_documents_per_s": round(_rate(lambda: render_pdf(doc), seconds_each), 1),
        "map_html_documents_per_s": round(_rate(lambda: render_html(doc), seconds_each), 1),
        "map_fhir_documents_per_s": round(_rate(lambda: action_plan_bundle(doc), seconds_each), 1),
        "map_pdf_bytes": len(render_pdf(doc)),
        "map_medications": len(doc.medications),
    }


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name}: {value}")
