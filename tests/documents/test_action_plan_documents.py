"""The member's papers: the standardized headings read back from the PDF's text and the HTML, escaping, education
coverage and sources, and the FHIR MAP (CarePlan) and PML (List of MedicationStatement) validated."""

from __future__ import annotations

import copy
import csv
import io
import uuid
from datetime import date
from pathlib import Path

import pytest
from pypdf import PdfReader

from mtm.contracts.documentation import ActionPlanDocument, ActionPlanItem, PersonalMedication, PlannedFollowUp
from mtm.documents import Letterhead, education_for, load_education, render_html, render_pdf
from mtm.documents.action_plan import STANDARD_HEADINGS
from mtm.drugs import resolve
from mtm.fhir.errors import BundleError
from mtm.fhir.export import action_plan_bundle, check_bundle

pytestmark = pytest.mark.unit
TOP300 = Path(__file__).resolve().parents[1] / "drugs" / "data" / "top300_2023.csv"

DOCUMENT = ActionPlanDocument(
    patient_id="p-1",
    task_id=uuid.UUID(int=7),
    pharmacist_id="rph-ana",
    performed_on=date(2026, 11, 20),
    delivery_method="telephone",
    recipient="beneficiary",
    provider_type="local-pharmacist",
    action_plan=(ActionPlanItem(topic="Missed evening doses", steps=("Use a weekly pill box", "Set a phone alarm")),),
    medications=(
        PersonalMedication(
            name="Metformin 500 mg tablet",
            ingredients=("metformin",),
            rxnorm_code="861007",
            how_i_use_it="1 tablet by mouth twice a day with meals",
            why_i_use_it="Diabetes",
            prescriber="Dr. Okafor",
            started=date(2024, 3, 1),
        ),
        PersonalMedication(
            name="Glyburide 5 mg tablet",
            ingredients=("glyburide",),
            how_i_use_it="1 tablet every morning",
            stopped=date(2026, 11, 20),
            why_stopped="Low blood sugar; changed to another medicine",
        ),
        PersonalMedication(
            name="Lisinopril and hydrochlorothiazide",
            ingredients=("lisinopril", "hydrochlorothiazide"),
            how_i_use_it="1 tablet daily",
        ),
    ),
    allergies=("Sulfa (rash)",),
    follow_ups=(PlannedFollowUp(due=date(2026, 12, 20), reason="Call about blood sugar readings"),),
    deliver_by=date(2026, 12, 4),
)


def pdf_text(content: bytes) -> str:
    return " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(io.BytesIO(content)).pages)


def test_the_pdf_says_every_standardized_heading_and_the_members_content() -> None:
    text = pdf_text(render_pdf(DOCUMENT, Letterhead(member_name="Ana Example", birth_date=date(1950, 1, 2))))
    for heading in STANDARD_HEADINGS:
        assert heading in text, heading
    for expected in ("Dear Ana Example:", "DOB: 01/02/1950", "Use a weekly pill box", "Sulfa (rash)", "12/20/2026"):
        assert expected in text, expected
    assert "Low blood sugar; changed to another medicine" in text
    # Education for what the member takes now, each with its source; none for the stopped glyburide.
    assert "About my medications" in text and "DailyMed" in text and "Lowers blood sugar" in text
    assert text.count("What it is for:") == 2


def test_the_pdf_is_the_same_bytes_for_the_same_document() -> None:
    assert render_pdf(DOCUMENT) == render_pdf(DOCUMENT)


def test_the_html_has_the_headings_and_escapes_what_people_typed() -> None:
    typed = DOCUMENT.model_copy(update={"allergies": ("<script>alert(1)</script>",)})
    html = render_html(typed, Letterhead(member_name="O'Neil & <Sons>"))
    assert all(heading in html for heading in ("What we talked about:", "Personal Medication List", "How I use it:"))
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html and "O&#39;Neil &amp; &lt;Sons&gt;" in html


def test_education_covers_the_150_most_prescribed_drugs_each_with_its_fda_source() -> None:
    texts = load_education()
    assert len(texts) >= 150
    with TOP300.open(encoding="utf-8", newline="") as handle:
        top = [row for row in csv.DictReader(handle)][:150]
    for row in top:
        ingredients = {i for part in row["generic"].split(";") for i in resolve(part.strip()).ingredients}
        assert education_for(ingredients), f"no patient education for {row['generic']}"
    for text in texts.values():
        assert "FDA-approved labeling" in text.source and text.source_url.startswith("https://dailymed.nlm.nih.gov/")
        for field in (text.what_it_is_for, text.how_to_use_it, text.watch_for):
            assert 10 <= len(field) <= 420, (text.name, field)
        for ingredient in text.ingredients:
            assert resolve(ingredient).ingredients == (ingredient,), ingredient


def test_a_combination_gets_its_own_text_and_an_unknown_drug_none() -> None:
    assert [e.name for e in education_for(["hydrochlorothiazide", "lisinopril"])] == [
        "Lisinopril and hydrochlorothiazide"
    ]
    assert [e.name for e in education_for(["lisinopril", "zzz-unknown"])] == ["Lisinopril"]
    assert education_for(["zzz-unknown"]) == [] and education_for([]) == []


def test_the_fhir_map_and_pml_validate_and_follow_the_medication_profile_ig() -> None:
    bundle = action_plan_bundle(DOCUMENT)
    check_bundle(bundle)
    resources = [entry["resource"] for entry in bundle["entry"]]
    care_plan = next(r for r in resources if r["resourceType"] == "CarePlan")
    pml = next(r for r in resources if r["resourceType"] == "List")
    statements = [r for r in resources if r["resourceType"] == "MedicationStatement"]
    assert care_plan["title"] == "Medication Action Plan" and len(care_plan["activity"]) == 3
    assert pml["meta"]["profile"] == ["http://hl7.org/fhir/us/smp/StructureDefinition/smp-medication-list"]
    assert len(pml["entry"]) == len(statements) == 3
    stopped = next(s for s in statements if s["status"] == "stopped")
    assert stopped["statusReason"][0]["text"].startswith("Low blood sugar")
    assert action_plan_bundle(DOCUMENT) == bundle  # stable ids: the same document, the same bundle


def test_a_reference_outside_the_bundle_is_refused() -> None:
    bundle = copy.deepcopy(action_plan_bundle(DOCUMENT))
    bundle["entry"][-1]["resource"]["subject"] = {"reference": "Patient/elsewhere"}
    with pytest.raises(BundleError, match="does not resolve"):
        check_bundle(bundle)


def test_the_rendering_benchmark_reports_its_figures() -> None:
    from bench import documents

    figures = documents.run(seconds_each=0.05)
    assert set(figures) == {
        "map_pdf_documents_per_s",
        "map_html_documents_per_s",
        "map_fhir_documents_per_s",
        "map_pdf_bytes",
        "map_medications",
    }
