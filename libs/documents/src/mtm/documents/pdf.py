"""The action plan's view as a PDF (ReportLab platypus, the standard Helvetica: no font files to ship)."""

from __future__ import annotations

from typing import Any, BinaryIO
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import LETTER
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import inch
from reportlab.platypus import (
    KeepTogether,
    ListFlowable,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

_STYLES = getSampleStyleSheet()
BODY = ParagraphStyle("body", parent=_STYLES["BodyText"], fontName="Helvetica", fontSize=11, leading=15)
LABEL = ParagraphStyle("label", parent=BODY, fontName="Helvetica-Bold")
TITLE = ParagraphStyle("title", parent=BODY, fontName="Helvetica-Bold", fontSize=15, leading=19, spaceAfter=8)
HEADING = ParagraphStyle("heading", parent=BODY, fontName="Helvetica-Bold", fontSize=12, leading=16, spaceBefore=8)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=8.5, leading=11, textColor=colors.HexColor("#333333"))
WRITE_HERE = "_" * 68
# The standard fonts encode Latin-1 (WinAnsi); anything else is written the way a typist would.
_PLAIN = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def _text(value: str) -> str:
    plain = value.translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")
    return escape(plain)


def _p(value: str, style: ParagraphStyle = BODY) -> Paragraph:
    return Paragraph(_text(value), style)


def _bullets(lines: list[str], kind: str = "bullet") -> ListFlowable:
    return ListFlowable([_p(line) for line in lines], bulletType=kind, leftIndent=14)


def _boxed(flowables: list[Any]) -> Table:
    table = Table([[flowables]], colWidths=[6.5 * inch])
    table.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.8, colors.black), ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _medication_table(fields: list[tuple[str, str]], stopped: bool) -> Table:
    rows = [
        [_p(label, LABEL), _p(f"{value} (stopped)" if stopped and label == "Medication:" else value)]
        for label, value in fields
    ]
    table = Table(rows, colWidths=[2.1 * inch, 4.4 * inch])
    table.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 0.8, colors.black),
                ("LINEBELOW", (0, 0), (-1, -2), 0.3, colors.grey),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    return table


def write_pdf(view: dict[str, Any], out: BinaryIO) -> None:
    labels = view["labels"]
    story: list[Any] = [
        _p(view["prepared"]),
        Spacer(1, 10),
        _p(f"Dear {view['member_name']}:"),
        *(_p(paragraph) for paragraph in view["letter"]),
        _bullets(view["letter_points"]),
        _p(
            f"If you want to talk about these papers, please call {view['contact']}. I look forward to working with "
            f"you and your doctors to help you stay healthy through the {view['program_name']}."
        ),
        Spacer(1, 8),
        _p("Sincerely,"),
        _p(view["provider_name"]),
        *(_p(line) for line in view["extra_lines"]),
        PageBreak(),
        _p(f"{labels['map_title']} For {view['member_name']}, DOB: {view['dob']}", TITLE),
        _p("This action plan will help you get the best results from your medications if you:"),
        _bullets(view["map_intro"], "1"),
        _p(
            "Have this action plan with you when you talk with your doctors, pharmacists, and other health care "
            "providers. Share this with your family or caregivers too."
        ),
        _p(f"DATE PREPARED: {view['prepared']}", LABEL),
    ]
    for item in view["items"]:
        story += [
            Spacer(1, 6),
            KeepTogether(
                _boxed(
                    [
                        _p(labels["talked_about"], LABEL),
                        _p(item["topic"]),
                        _p(labels["need_to_do"], LABEL),
                        _bullets(item["steps"]),
                        _p(labels["did_and_when"], LABEL),
                        _p(WRITE_HERE),
                        _p(WRITE_HERE),
                    ]
                )
            ),
        ]
    story += [
        _p(labels["follow_up"], HEADING),
        *(_p(line) for line in view["follow_ups"]),
        _p(WRITE_HERE),
        _p(labels["questions"], HEADING),
        _p(WRITE_HERE),
        _p(WRITE_HERE),
        _p(f"If you have any questions about your action plan, call {view['contact']}."),
        PageBreak(),
        _p(f"{labels['pml_title']} For {view['member_name']}, DOB: {view['dob']}", TITLE),
        _p(
            "This medication list was made for you after we talked. Use blank rows to add new medications, then fill "
            "in the dates you started using them. Cross out medications when you no longer use them, then write the "
            "date and why you stopped using them. Ask your doctors, pharmacists, and other health care providers to "
            "update this list at every visit. If you go to the hospital or emergency room, take this list with you. "
            "Share this with your family or caregivers too."
        ),
        _p(f"DATE PREPARED: {view['prepared']}", LABEL),
        Paragraph(f"<b>{_text(labels['allergies'])}</b> {_text(view['allergies'])}", BODY),
    ]
    for medication in view["medications"]:
        story += [Spacer(1, 6), KeepTogether(_medication_table(medication["fields"], medication["stopped"]))]
    story += [
        Spacer(1, 6),
        KeepTogether(_medication_table([(label, "") for label in view["medication_labels"]], stopped=False)),
        _p(labels["other_information"], HEADING),
        _p(WRITE_HERE),
        _p(f"If you have any questions about your medication list, call {view['contact']}."),
    ]
    if view["education"]:
        story += [PageBreak(), _p(labels["education"], TITLE)]
        for text in view["education"]:
            story.append(
                KeepTogether(
                    [
                        _p(text.name, HEADING),
                        _p(f"What it is for: {text.what_it_is_for}"),
                        _p(f"How to use it: {text.how_to_use_it}"),
                        _p(f"Watch for: {text.watch_for}"),
                        _p(f"Written in plain words from: {text.source} ({text.source_url}).", SMALL),
                    ]
                )
            )
        story.append(_p("This information does not replace talking with your doctor or pharmacist.", SMALL))
    document = SimpleDocTemplate(
        out,
        pagesize=LETTER,
        leftMargin=inch,
        rightMargin=inch,
        topMargin=0.8 * inch,
        bottomMargin=0.8 * inch,
        title=f"{labels['map_title']} and {labels['pml_title']}",
        author=view["provider_name"],
        # Reproducible bytes for the same document: no creation time or random id in the file.
        invariant=True,
    )
    document.build(story)
