"""The CMR's written summary in the CMS Standardized Format (form CMS-10396): cover letter, MAP and PML.

One view of the document feeds both renderers, so the HTML and the PDF say the same thing under the same
headings. The headings and the instructions to the member follow the form's required text; mtm holds no names or
addresses, so those come from the `Letterhead` at rendering time (blank lines to fill in by hand otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import cache
from io import BytesIO
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from mtm.contracts.documentation import ActionPlanDocument
from mtm.documents.education import Education, education_for

BLANK = "_______________________"
# The standardized headings (form CMS-10396, Part D MTM Program Standardized Format); tests read them back.
MAP_TITLE = "Medication Action Plan"
PML_TITLE = "Personal Medication List"
TALKED_ABOUT = "What we talked about:"
NEED_TO_DO = "What I need to do:"
DID_AND_WHEN = "What I did and when I did it:"
FOLLOW_UP = "My follow-up plan (add notes about next steps):"
QUESTIONS = "Questions I want to ask (include topics about medications or therapy):"
ALLERGIES = "Allergies or side effects:"
MEDICATION_FIELDS = (
    ("Medication:", "name"),
    ("How I use it:", "how_i_use_it"),
    ("Why I use it:", "why_i_use_it"),
    ("Prescriber:", "prescriber"),
    ("Date I started using it:", "started"),
    ("Date I stopped using it:", "stopped"),
    ("Why I stopped using it:", "why_stopped"),
)
OTHER_INFORMATION = "Other Information:"
EDUCATION_TITLE = "About my medications"
STANDARD_HEADINGS = (
    MAP_TITLE,
    TALKED_ABOUT,
    NEED_TO_DO,
    DID_AND_WHEN,
    FOLLOW_UP,
    QUESTIONS,
    PML_TITLE,
    ALLERGIES,
    *(label for label, _ in MEDICATION_FIELDS),
)
DELIVERY_WORDS = {
    "face-to-face": "in person",
    "telephone": "on the phone",
    "telehealth": "by video",
    "other": "",
}


@dataclass(frozen=True)
class Letterhead:
    """Who the papers are for and from: given when printing, never stored by mtm (names are not in the log)."""

    member_name: str | None = None
    birth_date: date | None = None
    program_name: str = "Medication Therapy Management Program"
    provider_name: str | None = None
    contact: str | None = None
    """A phone number and the days and times to call."""
    extra_lines: tuple[str, ...] = field(default=())


def _day(value: date | None) -> str:
    return value.strftime("%m/%d/%Y") if value else ""


def view(document: ActionPlanDocument, letterhead: Letterhead | None = None) -> dict[str, Any]:
    """Everything the renderers print, as text: the same words in HTML and in PDF."""
    head = letterhead or Letterhead()
    name = head.member_name or BLANK
    dob = _day(head.birth_date or document.birth_date) or BLANK
    contact = head.contact or BLANK
    talked = DELIVERY_WORDS.get(document.delivery_method, "")
    medications = [
        {
            "fields": [
                (label, _day(value) if isinstance(value, date) else (value or ""))
                for label, attribute in MEDICATION_FIELDS
                for value in (getattr(medication, attribute),)
            ],
            "stopped": medication.stopped is not None,
        }
        for medication in document.medications
    ]
    education: dict[tuple[str, ...], Education] = {}
    for medication in document.medications:
        if medication.stopped is None:
            for text in education_for(medication.ingredients):
                education.setdefault(text.ingredients, text)
    return {
        "prepared": _day(document.performed_on),
        "member_name": name,
        "dob": dob,
        "program_name": head.program_name,
        "provider_name": head.provider_name or BLANK,
        "contact": contact,
        "letter": [
            f"Thank you for talking with me {talked} on {_day(document.performed_on)} about your health and "
            "medications. Medicare's MTM (Medication Therapy Management) program helps you make sure that your "
            "medications are working.".replace("  ", " "),
            "Along with this letter are an action plan (Medication Action Plan) and a medication list (Personal "
            "Medication List). The action plan has steps you should take to help you get the best results from "
            "your medications. The medication list will help you keep track of your medications and how to use "
            "them the right way.",
        ],
        "letter_points": [
            "Have your action plan and medication list with you when you talk with your doctors, pharmacists, "
            "and other health care providers.",
            "Ask your doctors, pharmacists, and other health care providers to update them at every visit.",
            "Take your medication list with you if you go to the hospital or emergency room.",
            "Give a copy of the action plan and medication list to your family or caregivers.",
        ],
        "map_intro": [
            f'Read "{TALKED_ABOUT[:-1]}."',
            f'Take the steps listed in the "{NEED_TO_DO[:-1]}" boxes.',
            f'Fill in "{DID_AND_WHEN[:-1]}."',
            f'Fill in "{FOLLOW_UP.split(" (")[0]}" and "{QUESTIONS.split(" (")[0]}."',
        ],
        "items": [{"topic": item.topic, "steps": list(item.steps)} for item in document.action_plan],
        "follow_ups": [f"{_day(f.due)}: {f.reason}" for f in document.follow_ups],
        "allergies": ", ".join(document.allergies) or "",
        "medications": medications,
        "medication_labels": [label for label, _ in MEDICATION_FIELDS],
        "education": list(education.values()),
        "extra_lines": list(head.extra_lines),
        "labels": {
            "map_title": MAP_TITLE,
            "pml_title": PML_TITLE,
            "talked_about": TALKED_ABOUT,
            "need_to_do": NEED_TO_DO,
            "did_and_when": DID_AND_WHEN,
            "follow_up": FOLLOW_UP,
            "questions": QUESTIONS,
            "allergies": ALLERGIES,
            "other_information": OTHER_INFORMATION,
            "education": EDUCATION_TITLE,
        },
    }


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("mtm.documents", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(document: ActionPlanDocument, letterhead: Letterhead | None = None) -> str:
    """One self-contained HTML page (print-ready CSS, no external resources), every value escaped."""
    return _environment().get_template("action_plan.html.j2").render(**view(document, letterhead))


def render_pdf(document: ActionPlanDocument, letterhead: Letterhead | None = None) -> bytes:
    from mtm.documents.pdf import write_pdf

    out = BytesIO()
    write_pdf(view(document, letterhead), out)
    return out.getvalue()
