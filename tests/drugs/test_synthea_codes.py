"""Every Synthea sample RxNorm code resolves by code and by display text to the reviewed ingredients."""

import csv
from pathlib import Path

import pytest

from mtm.drugs import resolve

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent / "data"
# Codes whose display is not a drug (device, vaccine) and must stay unresolved; none in this sample.
EXPECTED_UNRESOLVED: frozenset[str] = frozenset()


def _read(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


CODES = _read("medication_codes.csv")
EXPECTED = {
    row["rxnorm_code"]: tuple(row["expected_ingredients"].split("|")) for row in _read("medication_codes_expected.csv")
}


def test_sample_holds_all_102_codes() -> None:
    assert len(CODES) == 102
    assert set(EXPECTED) == {row["rxnorm_code"] for row in CODES}


@pytest.mark.parametrize("row", CODES, ids=lambda row: f"{row['rxnorm_code']}-{row['display'][:40]}")
def test_code_and_display_resolve_to_the_same_reviewed_ingredients(row: dict[str, str]) -> None:
    code, display = row["rxnorm_code"], row["display"]
    by_code = resolve("", rxnorm_code=code)
    by_text = resolve(display)
    if code in EXPECTED_UNRESOLVED:
        assert not by_code.resolved and not by_text.resolved
        return
    assert by_code.matched_by == "rxnorm"
    assert by_text.matched_by == "text"
    assert by_text.ingredients == EXPECTED[code]
    assert by_code.ingredients == by_text.ingredients
    assert len(by_text.components) == len(by_text.ingredients)


def test_code_plus_display_keeps_parsed_details() -> None:
    resolution = resolve("Warfarin Sodium 5 MG Oral Tablet", rxnorm_code="855332")
    assert resolution.matched_by == "rxnorm"
    assert resolution.components[0].strength == 5.0
    assert resolution.components[0].salt == "sodium"
