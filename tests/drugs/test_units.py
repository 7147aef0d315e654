"""Routes, frequencies, canonical amounts and per-administration dose amounts."""

import pytest

from mtm.drugs import (
    dose_amount_per_administration,
    frequency_per_day,
    normalize_route,
    resolve,
    to_canonical_amount,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("PO", "oral"),
        ("oral", "oral"),
        ("by mouth", "oral"),
        ("Oral route", "oral"),
        ("26643006", "oral"),
        ("IV", "intravenous"),
        ("intravenous", "intravenous"),
        ("SC", "subcutaneous"),
        ("SQ", "subcutaneous"),
        ("subcut", "subcutaneous"),
        ("IM", "intramuscular"),
        ("SL", "sublingual"),
        ("topical", "topical"),
        ("inh", "inhalation"),
        ("inhaled", "inhalation"),
        ("PR", "rectal"),
        ("transdermal", "transdermal"),
        ("ophthalmic", "ophthalmic"),
        ("eye", "ophthalmic"),
        ("Nasal", "nasal"),
        ("  Intramuscular route ", "intramuscular"),
        ("Weird Route X", "weird route x"),
    ],
)
def test_normalize_route(text: str, route: str) -> None:
    assert normalize_route(text) == route


def test_normalize_route_empty() -> None:
    assert normalize_route(None) is None
    assert normalize_route("  ") is None


@pytest.mark.parametrize(
    ("text", "per_day"),
    [
        ("QD", 1),
        ("daily", 1),
        ("once daily", 1),
        ("OD", 1),
        ("q24h", 1),
        ("BID", 2),
        ("twice daily", 2),
        ("every 12 hours", 2),
        ("q12h", 2),
        ("TID", 3),
        ("q8h", 3),
        ("three times daily", 3),
        ("QID", 4),
        ("q6h", 4),
        ("QHS", 1),
        ("at bedtime", 1),
        ("QOD", 0.5),
        ("every other day", 0.5),
        ("weekly", 1 / 7),
        ("once a week", 1 / 7),
        ("QW", 1 / 7),
        ("every 4 hours", 6),
        ("q4-6h", 6),
        ("take 1 tablet by mouth twice daily", 2),
        ("5 times a day", 5),
        ("q4-6h prn pain", 6),
    ],
)
def test_frequency_from_text(text: str, per_day: float) -> None:
    assert frequency_per_day(text) == pytest.approx(per_day)


@pytest.mark.parametrize("text", ["PRN", "as needed", "", "whenever", None])
def test_unknown_or_prn_only_frequency_is_none(text: str | None) -> None:
    assert frequency_per_day(text) is None


@pytest.mark.parametrize(
    ("frequency", "period", "unit", "per_day"),
    [
        (2, 1, "d", 2),
        (1, 1, "wk", 1 / 7),
        (1, 8, "h", 3),
        (1, 30, "min", 48),
        (3, 1, "d", 3),
        (1, 1, "mo", 1 / 30),
        (None, 12, "h", 2),
    ],
)
def test_frequency_from_fhir_timing(frequency: int | None, period: float, unit: str, per_day: float) -> None:
    assert frequency_per_day(frequency=frequency, period=period, period_unit=unit) == pytest.approx(per_day)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1, "g", (1000.0, "mg")),
        (500, "mg", (500.0, "mg")),
        (75, "mcg", (0.075, "mg")),
        (75, "ug", (0.075, "mg")),
        (75, "µg", (0.075, "mg")),
        (75, "microgram", (0.075, "mg")),
        (100, "ng", (0.0001, "mg")),
        (10, "units", (10.0, "unit")),
        (10, "IU", (10.0, "unit")),
        (20, "mEq", (20.0, "meq")),
        (5, "mL", (5.0, "ml")),
        (2, "Puffs", (2, "puffs")),
    ],
)
def test_to_canonical_amount(value: float, unit: str, expected: tuple[float, str]) -> None:
    assert to_canonical_amount(value, unit) == expected


def test_dose_of_two_tablets_multiplies_strength() -> None:
    resolution = resolve("Acetaminophen 325 MG Oral Tablet")
    assert dose_amount_per_administration(resolution, 2, "tablet") == {"acetaminophen": (650.0, "mg")}


def test_dose_in_mg_for_single_ingredient_product() -> None:
    resolution = resolve("Naproxen 500 MG Oral Tablet")
    assert dose_amount_per_administration(resolution, 500, "mg") == {"naproxen": (500.0, "mg")}
    assert dose_amount_per_administration(resolve("warfarin"), 0.5, "g") == {"warfarin": (500.0, "mg")}


def test_dose_of_combination_tablet_gives_each_ingredient() -> None:
    resolution = resolve("Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet")
    assert dose_amount_per_administration(resolution, 1, "tablet") == {
        "sulfamethoxazole": (800.0, "mg"),
        "trimethoprim": (160.0, "mg"),
    }


def test_dose_volume_of_liquid() -> None:
    resolution = resolve("Amoxicillin 250 MG per 5 ML Oral Suspension")
    assert dose_amount_per_administration(resolution, 10, "mL") == {"amoxicillin": (500.0, "mg")}


def test_dose_puffs_of_inhaler() -> None:
    resolution = resolve("200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler")
    assert dose_amount_per_administration(resolution, 2, "puff") == {"albuterol": (0.18, "mg")}


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet", 500, "mg"),
        ("warfarin", 2, "tablet"),
        ("Blue pill", 1, "tablet"),
        ("Acetaminophen 325 MG Oral Tablet", 5, "ml"),
        ("Acetaminophen 325 MG Oral Tablet", 1, "bottle"),
    ],
)
def test_dose_amount_unknown_is_empty(text: str, value: float, unit: str) -> None:
    assert dose_amount_per_administration(resolve(text), value, unit) == {}
