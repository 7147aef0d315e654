"""Dose plausibility: a unit or product slip is told apart from an ordinary overdose, strength and concentration
included."""

from __future__ import annotations

import pytest

from mtm.review.domain.dur import CheckedMedication, PatientContext, check
from mtm.review.domain.dur.context import strengths
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit

KB = load_bundled()
ADULT = PatientContext(age_years=50, sex="female", weight_kg=70)


def _product(
    text: str, ingredient: str, daily: float | None, unit: str = "mg", dose: tuple[float, str] | None = None
) -> CheckedMedication:
    return CheckedMedication(
        ingredients=(ingredient,),
        text=text,
        daily_amounts={ingredient: (daily, unit)} if daily is not None else {},
        frequency_per_day=1,
        route="oral",
        dose_value=dose[0] if dose else None,
        dose_unit=dose[1] if dose else None,
        strengths=strengths(text, (ingredient,)),
    )


def _dose_rules(medication: CheckedMedication) -> list[str]:
    return [alert.rule_id or "" for alert in check(ADULT, [medication], KB) if alert.kind == "dose"]


def test_mg_written_for_a_mcg_tablet_is_a_unit_slip_not_an_overdose() -> None:
    slip = _product("Levothyroxine Sodium 100 MCG Oral Tablet", "levothyroxine", 100, dose=(100, "mg"))
    assert _dose_rules(slip) == ["plaus.unit_slip"]
    right = _product("Levothyroxine Sodium 100 MCG Oral Tablet", "levothyroxine", 100, "mcg", dose=(100, "mcg"))
    assert _dose_rules(right) == []


def test_mcg_written_for_a_mg_tablet_is_a_unit_slip() -> None:
    slip = _product("Warfarin Sodium 5 MG Oral Tablet", "warfarin", 0.005, dose=(5, "mcg"))
    alerts = [a for a in check(ADULT, [slip], KB) if a.rule_id == "plaus.unit_slip"]
    assert alerts and alerts[0].severity == "high" and "5 mg strength" in alerts[0].message


def test_tenfold_above_the_label_maximum_is_a_probable_error_and_twofold_an_overdose() -> None:
    far = _product("Citalopram 20 MG Oral Tablet", "citalopram", 400, dose=(400, "mg"))
    assert _dose_rules(far) == ["plaus.ratio_to_max"]
    over = _product("Citalopram 40 MG Oral Tablet", "citalopram", 80, dose=(80, "mg"))
    assert _dose_rules(over) == ["lbl.citalopram.max"]


def test_concentration_is_named_when_a_liquid_dose_is_far_out() -> None:
    # 200 mL a day of a 2 mg/mL solution is 400 mg, ten times the 40 mg/day maximum: the volume or the
    # concentration was probably misread, and the alert says which concentration the product has.
    solution = CheckedMedication(
        ingredients=("citalopram",),
        text="Citalopram 10 MG/5ML Oral Solution",
        daily_amounts={"citalopram": (400.0, "mg")},
        frequency_per_day=1,
        route="oral",
        dose_value=200,
        dose_unit="mL",
        strengths=strengths("Citalopram 10 MG/5ML Oral Solution", ("citalopram",)),
    )
    [alert] = [a for a in check(ADULT, [solution], KB) if a.kind == "dose"]
    assert alert.rule_id == "plaus.ratio_to_max"
    assert "strength 2 mg/ml" in alert.message and "dose 200 mL" in alert.message


def test_many_tablets_at_once_asks_about_the_strength() -> None:
    many = _product("Prednisone 5 MG Oral Tablet", "prednisone", None, dose=(12, "tablet"))
    assert "plaus.units_per_dose" in _dose_rules(many)
    few = _product("Prednisone 5 MG Oral Tablet", "prednisone", None, dose=(2, "tablet"))
    assert "plaus.units_per_dose" not in _dose_rules(few)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Levothyroxine Sodium 100 MCG Oral Tablet", (100.0, "mcg")),
        ("Morphine Sulfate 100 MG/5ML Oral Solution", (20.0, "mg/ml")),
        ("Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", (0.09, "mg/actuat")),
        ("Insulin Glargine 100 UNT/ML Injectable Solution", (100.0, "unit/ml")),
    ],
)
def test_strength_is_read_from_a_single_ingredient_product(text: str, expected: tuple[float, str]) -> None:
    assert strengths(text, ("x",)) == {"x": expected}


def test_no_strength_for_combinations_or_ambiguous_names() -> None:
    assert strengths("Acetaminophen 325 MG / Hydrocodone Bitartrate 5 MG Oral Tablet", ("a", "b")) == {}
    assert strengths("Metformin 500 MG or 1000 MG", ("metformin",)) == {}
