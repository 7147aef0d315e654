"""Pharmacogenomic rules: every row fires for its phenotype, lab-style results are read, CPIC level A is covered."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from review.unit.dur_support import med, of_kind
from support.knowledge import bundled_rows

from mtm.review.domain.dur import PatientContext, check
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit

KB = load_bundled()
LEVEL_A = Path(__file__).resolve().parents[1] / "data" / "cpic_level_a_pairs.csv"
# Final CPIC level A pairs without a phenotype rule, and why.
NOT_PHENOTYPE_RULES = {
    ("IFNL3", "peginterferon alfa-2a"): "response prediction for an obsolete HCV regimen; no drug-safety action",
    ("IFNL4", "peginterferon alfa-2a"): "response prediction for an obsolete HCV regimen; no drug-safety action",
    ("IFNL3", "peginterferon alfa-2b"): "response prediction for an obsolete HCV regimen; no drug-safety action",
    ("IFNL4", "peginterferon alfa-2b"): "response prediction for an obsolete HCV regimen; no drug-safety action",
    ("CYP4F2", "warfarin"): "a term of the warfarin dosing algorithm; the CYP2C9/VKORC1 rows send the user to it",
}


RULE_ROWS = bundled_rows("pgx_cpic") + bundled_rows("pgx_curated") + bundled_rows("label_pgx")


def _context(gene: str, result: str) -> PatientContext:
    return PatientContext(hla={gene: result}) if "*" in gene else PatientContext(pgx={gene: result})


@pytest.mark.parametrize("row", RULE_ROWS, ids=lambda row: row["rule_id"])
def test_every_pharmacogenomic_row_fires_for_its_phenotype(row: dict[str, str]) -> None:
    alerts = of_kind(
        check(_context(row["gene"], row["phenotype"]), [med(KB.canonical(row["drug"]))], KB), "pharmacogenomic"
    )
    assert alerts, row["rule_id"]
    assert alerts[0].severity == min(
        (
            r["severity"]
            for r in RULE_ROWS
            if r["gene"] == row["gene"] and r["phenotype"] == row["phenotype"] and r["drug"] == row["drug"]
        ),
        key=["high", "moderate", "low"].index,
    )


def test_every_final_cpic_level_a_pair_has_a_rule() -> None:
    with LEVEL_A.open(newline="", encoding="utf-8") as handle:
        pairs = [row for row in csv.DictReader(handle) if row["cpic_level_status"] == "Final"]
    assert len(pairs) > 50
    missing = []
    for pair in pairs:
        rules = KB.pgx.get(KB.canonical(pair["drug"]), ())
        covered = any(rule.gene == pair["gene"] or rule.gene.startswith(f"{pair['gene']}*") for rule in rules)
        if not covered and (pair["gene"], pair["drug"]) not in NOT_PHENOTYPE_RULES:
            missing.append(f"{pair['gene']}/{pair['drug']}")
    assert missing == []


@pytest.mark.parametrize(
    "result",
    [
        "CYP2C19 *2/*2 - Poor Metabolizer",
        "Poor Metaboliser",
        "PM",
        "*2/*2",
        "*3/*2",
        "Genotype: *2/*3; Phenotype: Poor metabolizer",
    ],
)
def test_lab_style_results_are_read(result: str) -> None:
    alerts = of_kind(check(PatientContext(pgx={"CYP2C19": result}), [med("clopidogrel")], KB), "pharmacogenomic")
    assert alerts and "poor metabolizer" in alerts[0].message


@pytest.mark.parametrize("result", ["CYP2C19 *1/*1 - Normal Metabolizer", "*1/*1", "NM", "Extensive metabolizer"])
def test_normal_results_raise_nothing(result: str) -> None:
    assert of_kind(check(PatientContext(pgx={"CYP2C19": result}), [med("clopidogrel")], KB), "pharmacogenomic") == []


def test_ultrarapid_spellings() -> None:
    for result in ("Ultra-rapid metabolizer", "CYP2D6 UM", "Ultrarapid Metabolizer (*1/*1xN)"):
        alerts = of_kind(check(PatientContext(pgx={"CYP2D6": result}), [med("codeine")], KB), "pharmacogenomic")
        assert alerts and alerts[0].severity == "high", result


def test_hla_detected() -> None:
    alerts = of_kind(check(PatientContext(hla={"HLA-B*57:01": "Detected"}), [med("abacavir")], KB), "pharmacogenomic")
    assert alerts and alerts[0].severity == "high"


def test_lamotrigine_hla_b_15_02_from_its_boxed_warning() -> None:
    """CPIC has no lamotrigine guideline; the label's boxed warning names HLA-B*15:02 as a serious-rash risk factor."""
    positive = of_kind(
        check(PatientContext(hla={"HLA-B*15:02": "positive"}), [med("lamotrigine")], KB), "pharmacogenomic"
    )
    assert [(a.rule_id, a.severity, a.tier) for a in positive] == [
        ("lbl.lamotrigine.hla_b_15_02", "moderate", "passive")
    ]
    assert "Boxed Warning" in positive[0].source and "HLA-B*1502" in positive[0].source
    negative = PatientContext(hla={"HLA-B*15:02": "negative"})
    assert of_kind(check(negative, [med("lamotrigine")], KB), "pharmacogenomic") == []


def test_tacrolimus_cyp3a5_expresser_but_not_non_expresser() -> None:
    expresser = of_kind(check(PatientContext(pgx={"CYP3A5": "*1/*3"}), [med("tacrolimus")], KB), "pharmacogenomic")
    assert [a.rule_id for a in expresser] == ["pgx.tacrolimus.cyp3a5_im"]
    assert of_kind(check(PatientContext(pgx={"CYP3A5": "*3/*3"}), [med("tacrolimus")], KB), "pharmacogenomic") == []
