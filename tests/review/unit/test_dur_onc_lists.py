"""Every ONC high-priority pair alerts high/interruptive; every ONC non-interruptive pair stays low/passive."""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest
from review.unit.dur_support import med

from mtm.review.domain.dur import PatientContext, check
from mtm.review.knowledge import BUNDLED_DIRECTORY, load_bundled

pytestmark = pytest.mark.unit

KB = load_bundled()

# Non-interruptive pairs that a curated rule deliberately rates higher (checked both ways below).
NONINTERRUPTIVE_EXCEPTIONS = {
    frozenset({"ketoconazole", "omeprazole"}): "cur.ketoconazole.ppi",
    frozenset({"ketoconazole", "esomeprazole"}): "cur.ketoconazole.ppi",
    frozenset({"ketoconazole", "lansoprazole"}): "cur.ketoconazole.ppi",
    frozenset({"ketoconazole", "pantoprazole"}): "cur.ketoconazole.ppi",
    frozenset({"ketoconazole", "rabeprazole"}): "cur.ketoconazole.ppi",
    frozenset({"citalopram", "sotalol"}): "lbl.citalopram.qt",
    # The sertraline label names sotalol among the QT-prolonging drugs to avoid.
    frozenset({"sertraline", "sotalol"}): "lbl.sertraline.qt",
    # The paroxetine label names metoprolol and nebivolol among the CYP2D6 substrates whose dose to decrease
    # (moderate, passive).
    frozenset({"metoprolol", "paroxetine"}): "lbl.paroxetine.cyp2d6_substrates",
    frozenset({"nebivolol", "paroxetine"}): "lbl.paroxetine.cyp2d6_substrates",
    frozenset({"paroxetine", "propranolol"}): "lbl.paroxetine.cyp2d6_substrates",
}


def _read(name: str) -> list[dict[str, str]]:
    with (BUNDLED_DIRECTORY / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pairs(members: list[dict[str, str]], skip_pairs: frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    sides: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in members:
        if row.get("flag") or row["pair_no"] in skip_pairs:
            continue
        sides[row["pair_no"]][row["role"]].append(KB.canonical(row["drug"]))
    return sorted(
        {
            (number, obj, precipitant)
            for number, roles in sides.items()
            for obj in roles["object"]
            for precipitant in roles["precipitant"]
            if obj != precipitant
        }
    )


HIGH_PAIRS = _pairs(_read("onc_high_priority_members.csv"), frozenset({"8"}))
NONINTERRUPTIVE_PAIRS = _pairs(
    _read("onc_noninterruptive_members.csv") + _read("onc_noninterruptive_added_members.csv")
)


def _interaction(a: str, b: str):
    alerts = [alert for alert in check(PatientContext(), [med(a), med(b)], KB) if alert.kind == "interaction"]
    assert len(alerts) <= 1, alerts
    return alerts[0] if alerts else None


def test_lists_are_not_empty() -> None:
    assert len(HIGH_PAIRS) > 350
    assert len(NONINTERRUPTIVE_PAIRS) > 2500


@pytest.mark.parametrize(("pair_no", "obj", "precipitant"), HIGH_PAIRS, ids=lambda value: str(value))
def test_onc_high_priority_pair_is_high_and_interruptive(pair_no: str, obj: str, precipitant: str) -> None:
    alert = _interaction(obj, precipitant)
    assert alert is not None, f"pair {pair_no}: {obj} + {precipitant} not flagged"
    assert (alert.severity, alert.tier) == ("high", "interruptive")
    assert alert.ingredients == tuple(sorted((obj, precipitant)))


@pytest.mark.parametrize(("pair_no", "obj", "precipitant"), NONINTERRUPTIVE_PAIRS, ids=lambda value: str(value))
def test_onc_noninterruptive_pair_is_at_most_low_passive(pair_no: str, obj: str, precipitant: str) -> None:
    alert = _interaction(obj, precipitant)
    assert alert is not None, f"pair {pair_no}: {obj} + {precipitant} not flagged"
    exception = NONINTERRUPTIVE_EXCEPTIONS.get(frozenset((obj, precipitant)))
    if exception is not None:
        assert alert.rule_id == exception
        assert "ONC non-interruptive" in alert.source
    elif alert.rule_id and alert.rule_id.startswith("onc-high"):
        assert alert.severity == "high"
    else:
        assert (alert.severity, alert.tier) == ("low", "passive"), alert


def test_suspect_expansion_rows_are_ignored() -> None:
    assert _interaction("lisinopril", "niclosamide") is None
    assert _interaction("lisinopril", "methacholine") is None


def test_qt_pair_8_fires_through_the_curated_qt_list() -> None:
    alert = _interaction("haloperidol", "ondansetron")
    assert alert is not None and alert.rule_id == "cur.qt.qt" and alert.severity == "moderate"
    # Citalopram's own label says to avoid QT-prolonging drugs: its rule is kept over the curated QT rule.
    alert = _interaction("citalopram", "ondansetron")
    assert alert is not None and alert.rule_id == "lbl.citalopram.qt" and alert.severity == "moderate"
    assert _interaction("dofetilide", "azithromycin").severity == "high"  # type: ignore[union-attr]
