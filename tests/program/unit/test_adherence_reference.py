"""PDC's covered days, counted as merged intervals, equal a day-by-day count of the same supplies."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mtm.program.domain.adherence import DispensedFill, covered_days

pytestmark = pytest.mark.unit
START = date(2025, 1, 1)
# One drug, a second of the class, and a combination product written in two orders (one drug).
DRUGS = (("atorvastatin",), ("simvastatin",), ("amlodipine", "atorvastatin"), ("atorvastatin", "amlodipine"))
on_days = st.integers(min_value=-60, max_value=400).map(lambda n: START + timedelta(days=n))
fills = st.builds(
    DispensedFill,
    st.sampled_from(DRUGS),
    on_days,
    st.integers(min_value=0, max_value=120),
)


def day_by_day(fills: list[DispensedFill], first: date, last: date) -> int:
    by_drug: dict[tuple[str, ...], list[DispensedFill]] = {}
    for fill in fills:
        by_drug.setdefault(tuple(sorted(fill.ingredients)), []).append(fill)
    days: set[date] = set()
    for drug_fills in by_drug.values():
        supplied_until = date.min
        for fill in sorted(drug_fills, key=lambda f: f.filled_on):
            begin = max(fill.filled_on, supplied_until + timedelta(days=1))
            supplied_until = begin + timedelta(days=fill.days_supply - 1)
            day = max(begin, first)
            while day <= min(supplied_until, last):
                days.add(day)
                day += timedelta(days=1)
    return len(days)


@given(st.lists(fills, max_size=20), on_days, st.integers(min_value=-5, max_value=400))
def test_merged_intervals_count_the_days_a_day_by_day_count_finds(
    supplies: list[DispensedFill], first: date, length: int
) -> None:
    last = first + timedelta(days=length)
    assert covered_days(supplies, first, last) == day_by_day(supplies, first, last)
