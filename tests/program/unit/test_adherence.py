"""PDC computed by hand: overlaps shifted, gaps counted, a single fill not measured, exclusions noted."""

from __future__ import annotations

from datetime import date

import pytest

from mtm.program.domain.adherence import DispensedFill, measure
from mtm.program.tables import adherence_tables

pytestmark = pytest.mark.unit
YEAR_END = date(2025, 12, 31)


def fill(ingredients: str, on: str, days: int) -> DispensedFill:
    return DispensedFill(tuple(ingredients.split("+")), date.fromisoformat(on), days)


def statins(*fills: DispensedFill, as_of: date = YEAR_END, **kwargs):
    result = measure(list(fills), year=2025, as_of=as_of, tables=adherence_tables(), **kwargs)
    return next(c for c in result.classes if c.drug_class == "statins"), result


def test_a_gap_lowers_the_pdc() -> None:
    # Oct 3 + 30 days covers Oct 3 - Nov 1; Dec 2 + 30 covers Dec 2 - Dec 31: 60 of 90 days (Oct 3 - Dec 31).
    measured, result = statins(fill("atorvastatin", "2025-10-03", 30), fill("atorvastatin", "2025-12-02", 30))
    assert (measured.status, measured.days_covered, measured.treatment_days) == ("measured", 60, 90)
    assert measured.pdc == round(60 / 90, 4) and result.below_threshold == ("statins",)


def test_an_early_refill_of_the_same_drug_is_shifted_not_lost() -> None:
    # Second fill 10 days early: it starts Nov 2 after the first runs out, so Oct 3 - Dec 1 is covered: 60 days.
    measured, _ = statins(fill("atorvastatin", "2025-10-03", 30), fill("atorvastatin", "2025-10-23", 30))
    assert measured.days_covered == 60 and measured.pdc == round(60 / 90, 4)


def test_different_drugs_of_a_class_overlap_without_shifting() -> None:
    measured, _ = statins(fill("atorvastatin", "2025-10-03", 30), fill("rosuvastatin", "2025-10-23", 30))
    # Oct 3 - Nov 21 covered (atorvastatin to Nov 1, rosuvastatin Oct 23 - Nov 21): 50 days.
    assert measured.days_covered == 50


def test_supply_past_the_period_end_does_not_count_and_full_coverage_is_one() -> None:
    measured, result = statins(fill("simvastatin", "2025-11-01", 90), fill("simvastatin", "2025-12-01", 90))
    assert measured.treatment_days == 61 and measured.days_covered == 61 and measured.pdc == 1.0
    assert result.below_threshold == ()


def test_a_single_fill_or_two_on_one_day_is_not_measured() -> None:
    single, _ = statins(fill("atorvastatin", "2025-03-01", 30))
    same_day, _ = statins(fill("atorvastatin", "2025-03-01", 30), fill("amlodipine+atorvastatin", "2025-03-01", 30))
    assert single.status == same_day.status == "too-few-fills" and single.pdc is None
    assert same_day.fills == 2


def test_a_year_not_over_is_counted_to_the_measurement_date() -> None:
    measured, result = statins(
        fill("atorvastatin", "2025-01-01", 30), fill("atorvastatin", "2025-02-15", 30), as_of=date(2025, 3, 1)
    )
    # Jan 1 - Mar 1 is 60 days; covered Jan 1 - Jan 30 and Feb 15 - Mar 1: 30 + 15.
    assert (measured.days_covered, measured.treatment_days) == (45, 60)
    assert result.period_end == date(2025, 3, 1)


def test_exclusions_are_noted_per_class() -> None:
    fills = [
        fill("metformin", "2025-01-05", 90),
        fill("metformin", "2025-04-05", 90),
        fill("insulin glargine", "2025-06-01", 30),
        fill("sacubitril+valsartan", "2025-02-01", 30),
        fill("lisinopril", "2025-01-01", 30),
        fill("lisinopril", "2025-03-01", 30),
    ]
    result = measure(fills, year=2025, as_of=YEAR_END, tables=adherence_tables())
    by_class = {c.drug_class: c for c in result.classes}
    assert by_class["diabetes-non-insulin"].exclusion == "insulin filled during the year"
    assert by_class["ras-antagonists"].status == "excluded"
    esrd = measure(
        fills[:2], year=2025, as_of=YEAR_END, tables=adherence_tables(), diseases=["end-stage-renal-disease"]
    )
    assert {c.drug_class: c.status for c in esrd.classes}["diabetes-non-insulin"] == "excluded"


def test_newly_below_names_classes_that_were_not_below_before() -> None:
    fills = (fill("atorvastatin", "2025-10-03", 30), fill("atorvastatin", "2025-12-02", 30))
    assert statins(*fills)[1].newly_below == ("statins",)
    assert statins(*fills, previous_below=["statins"])[1].newly_below == ()
