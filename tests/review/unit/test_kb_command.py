"""`mtm kb coverage` (review's own command): the report, its JSON, and the exit code CI relies on."""

from __future__ import annotations

import csv
import json
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from mtm.review.cli import kb
from mtm.review.knowledge import BUNDLED_DIRECTORY

pytestmark = pytest.mark.unit


def test_coverage_lists_every_top_drug_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb(["coverage"]) == 0
    out = capsys.readouterr().out
    assert "label coverage of 300 most prescribed drugs" in out
    assert "ZOCOR (simvastatin)" in out and "no label text staged" in out
    assert "PROBLEM" not in out


def test_coverage_json_names_rules_and_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb(["coverage", "--json", "--drug", "warfarin"]) == 0
    report = json.loads(capsys.readouterr().out)
    [warfarin] = report["drugs"]
    assert "lbl.warfarin.pregnancy" in warfarin["kinds"]["contraindication"]["rules"]
    assert warfarin["kinds"]["max-dose"]["status"] == "accounted"


def test_a_row_citing_no_section_fails_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "kb"
    shutil.copytree(BUNDLED_DIRECTORY, site)
    path = site / "label_renal.csv"
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["section"] = ""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert kb(["coverage", "--kb", str(site)]) == 1
    assert "no section" in capsys.readouterr().out


def test_the_command_is_registered_by_the_review_package() -> None:
    [tool] = entry_points(group="mtm.tools", name="kb")
    assert tool.dist is not None and tool.dist.name == "mtm-review"
    [script] = entry_points(group="console_scripts", name="mtm-kb")
    assert script.value == "mtm.review.cli:kb_main"


def test_a_systemic_label_does_not_speak_for_a_local_product(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb(["coverage", "--json", "--drug", "ciprofloxacin"]) == 0
    drugs = {drug["name"]: drug for drug in json.loads(capsys.readouterr().out)["drugs"]}
    assert drugs["ciprofloxacin"]["labels"] and not drugs["ciprofloxacin ophthalmic"]["labels"]
    assert drugs["ciprofloxacin ophthalmic"]["kinds"]["contraindication"]["status"] == "no-label"
    assert kb(["coverage", "--json", "--drug", "fluorouracil"]) == 0
    topical = {drug["name"]: drug for drug in json.loads(capsys.readouterr().out)["drugs"]}["fluorouracil topical"]
    assert topical["labels"], "a topical label still speaks for the topical product"


def test_a_local_products_label_does_not_speak_for_the_same_drug_by_mouth() -> None:
    from mtm.review.knowledge.coverage import coverage

    drugs = {drug.name: drug for drug in coverage().drugs}
    assert drugs["diclofenac topical"].labels and all("topical" not in label for label in drugs["diclofenac"].labels)
    assert not any("gel" in label.lower() for label in drugs["diclofenac"].labels), drugs["diclofenac"].labels


def test_a_dietary_supplement_shows_as_having_no_drug_label(capsys: pytest.CaptureFixture[str]) -> None:
    assert kb(["coverage", "--json", "--drug", "melatonin"]) == 0
    [melatonin] = json.loads(capsys.readouterr().out)["drugs"]
    assert not melatonin["labels"]
    kinds = melatonin["kinds"]
    assert {entry["status"] for entry in kinds.values()} == {"no-drug-label"}
    assert kinds["contraindication"]["gaps"][0].startswith("no FDA drug label (dietary supplement)")
    assert kb(["coverage", "--drug", "melatonin"]) == 0
    assert "no FDA drug label (dietary supplement)" in capsys.readouterr().out


def test_a_supplement_row_without_a_source_or_outside_the_list_fails_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "kb"
    shutil.copytree(BUNDLED_DIRECTORY, site)
    with (site / "no_drug_label.csv").open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [["melatonin", "dietary supplement", "a second reading", ""], ["kale", "food", "x", "y"]]
        )
    assert kb(["coverage", "--kb", str(site)]) == 1
    out = capsys.readouterr().out
    assert "source are all required" in out and "'kale' is not in top300.csv" in out
