"""Loading the knowledge base: bundled files, a site's directory, and rules that every row must satisfy."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from review.unit.dur_support import med

from mtm.review.domain.dur import KnowledgeBaseError, PatientContext, check
from mtm.review.domain.dur.tables import TABLES
from mtm.review.knowledge import BUNDLED_DIRECTORY, KB_PATH_SETTING, load_bundled, load_configured

pytestmark = pytest.mark.unit

RULE_FILES = sorted(path for path in BUNDLED_DIRECTORY.glob("*.csv") if path.stem in {spec.table for spec in TABLES})


CITED = {spec.table for spec in TABLES if spec.cited}


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_every_rule_row_has_id_source_severity_and_tier(path: Path) -> None:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    ids = [row["rule_id"] for row in rows]
    assert len(ids) == len(set(ids)), f"duplicate rule ids in {path.name}"
    for row in rows:
        if path.stem in CITED:  # the source is written from the label, section and quote the row cites
            assert all(row[column].strip() for column in ("label_set_id", "section", "quote")), row["rule_id"]
        else:
            assert row["source"].strip(), row["rule_id"]
        assert row["message"].strip(), row["rule_id"]
        assert row["severity"] in ("high", "moderate", "low"), row["rule_id"]
        assert row["tier"] in ("interruptive", "passive"), row["rule_id"]


def test_every_rule_table_has_a_declaration_and_a_file() -> None:
    declared = {spec.table for spec in TABLES}
    assert declared == {path.stem for path in RULE_FILES}
    supporting = {"aliases", "classes", "allergy_keywords", "pgx_diplotypes", "labels", "value_sets", "mechanism_roles"}
    supporting |= {"routes"}
    supporting |= {"label_gaps", "top300", "no_drug_label"}  # read by the coverage report, not by the engine
    supporting |= {p.stem for p in BUNDLED_DIRECTORY.glob("*members.csv")}
    assert {path.stem for path in BUNDLED_DIRECTORY.glob("*.csv")} == declared | supporting


def test_severity_and_message_come_from_the_row(tmp_path: Path) -> None:
    for name in ("VERSION", "classes.csv", "onc_high_priority_members.csv", "onc_high_priority_pairs.csv"):
        shutil.copy(BUNDLED_DIRECTORY / name, tmp_path / name)
    pairs = tmp_path / "onc_high_priority_pairs.csv"
    with pairs.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["pair_no"] == "9":
            row.update(severity="moderate", tier="passive", message="Site wording.")
    with pairs.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    alerts = check(
        PatientContext(), [med("ramelteon"), med("fluvoxamine")], load_configured({KB_PATH_SETTING: str(tmp_path)})
    )
    assert [(a.rule_id, a.severity, a.tier) for a in alerts] == [("onc-high.9", "moderate", "passive")]
    assert alerts[0].message.endswith("Site wording.")


@pytest.mark.parametrize(
    "name",
    [
        "classes.csv",
        "aliases.csv",
        "allergy_keywords.csv",
        "value_sets.csv",
        "mechanism_roles.csv",
        "top300.csv",
        "routes.csv",
    ],
)
def test_every_supporting_row_has_a_source(name: str) -> None:
    with (BUNDLED_DIRECTORY / name).open(newline="", encoding="utf-8") as handle:
        assert all(row["source"].strip() for row in csv.DictReader(handle))


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("ophthalmic,local,timolol,eye drops", "must name no ingredient"),
        ("oral,systemic,timolol,tablets", "not listed as local"),
        ("ophthalmic,absorbed,,eye drops", "must name no ingredient"),
    ],
)
def test_a_malformed_routes_row_does_not_load(tmp_path: Path, row: str, error: str) -> None:
    (tmp_path / "VERSION").write_text("test", encoding="utf-8")
    (tmp_path / "routes.csv").write_text(f"route,exposure,ingredient,source\n{row}\n", encoding="utf-8")
    with pytest.raises(KnowledgeBaseError, match=error):
        load_configured({KB_PATH_SETTING: str(tmp_path)})


def test_bundled_kb_has_a_version_and_counts() -> None:
    kb = load_bundled()
    assert kb.version == (BUNDLED_DIRECTORY / "VERSION").read_text(encoding="utf-8").strip()
    assert kb.rule_counts["onc_high_priority_pairs"] > 0
    assert kb.rule_counts["ndfrt_va_ddi_pairs"] > 2000
    assert "qt_prolonging" in kb.class_members


def test_source_mentions_other_lists_covering_the_pair() -> None:
    alert = next(a for a in check(PatientContext(), [med("simvastatin"), med("clarithromycin")], load_bundled()))
    assert alert.severity == "high" and "also listed by" in alert.source


def test_load_configured_uses_the_setting(tmp_path: Path) -> None:
    site = tmp_path / "kb"
    site.mkdir()
    (site / "VERSION").write_text("site-1\n", encoding="utf-8")
    shutil.copy(BUNDLED_DIRECTORY / "classes.csv", site / "classes.csv")
    (site / "interactions_curated.csv").write_text(
        "rule_id,a,b,severity,tier,message,source\n"
        "site.1,amlodipine,levothyroxine,moderate,passive,Site rule.,Site formulary 2026\n",
        encoding="utf-8",
    )
    kb = load_configured({KB_PATH_SETTING: str(site)})
    assert kb.version == "site-1"
    alerts = check(PatientContext(), [med("amlodipine"), med("levothyroxine")], kb)
    assert [(alert.rule_id, alert.source) for alert in alerts] == [("site.1", "Site formulary 2026")]
    assert load_configured({}) is load_bundled()


def test_directory_without_version_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="VERSION"):
        load_configured({KB_PATH_SETTING: str(tmp_path)})


def test_unknown_class_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "VERSION").write_text("x", encoding="utf-8")
    (tmp_path / "interactions_curated.csv").write_text(
        "rule_id,a,b,severity,tier,message,source\nbad.1,class:nope,warfarin,high,interruptive,m,s\n",
        encoding="utf-8",
    )
    with pytest.raises(KnowledgeBaseError, match="nope"):
        load_configured({KB_PATH_SETTING: str(tmp_path)})


def test_the_bundled_knowledge_base_loads() -> None:
    """How long it takes is measured by `make bench` (bench/dur_check.py), never asserted here."""
    kb = load_configured({KB_PATH_SETTING: str(BUNDLED_DIRECTORY)})
    assert kb.interactions and kb.version
