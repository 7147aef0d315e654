"""Proportion of days covered (PDC) per drug class from pharmacy fills, as a pure function.

The method, in our words (after the public descriptions of the PQA-endorsed adherence measures in CMS's Part D
Star Ratings technical notes; no PQA text or value set is used):

* the measurement period is a calendar year, counted up to `as_of` when the year is not over;
* a patient is measured for a class with at least two fills of the class on different dates in the period;
* the treatment period runs from the first fill of the class in the period (the index date) to its end;
* a day is covered when some drug of the class was supplied for it. When fills of the same drug overlap, the later
  one starts the day after the earlier supply runs out (early refills shift forward); supplies of different drugs
  of the class overlap without shifting; supply past the end of the period does not count;
* PDC = covered days / days in the treatment period; below the threshold (80 %) the patient is non-adherent;
* exclusions (from a data file): end-stage renal disease for every class, insulin for the diabetes class,
  sacubitril/valsartan for RAS antagonists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from mtm.contracts.program import AdherenceClass, AdherenceMeasurement, ChronicDisease, ClassAdherence

THRESHOLD = 0.8
CLASSES: tuple[AdherenceClass, ...] = ("statins", "ras-antagonists", "diabetes-non-insulin")


@dataclass(frozen=True, slots=True)
class Exclusion:
    drug_class: AdherenceClass
    kind: str
    """`condition` (a core chronic disease category) or `fill` (an ingredient, matched as a prefix)."""
    value: str
    reason: str


@dataclass(frozen=True)
class AdherenceTables:
    members: Mapping[str, AdherenceClass]
    """Ingredient → the class it belongs to."""
    exclusions: Sequence[Exclusion]


@dataclass(frozen=True, slots=True)
class DispensedFill:
    ingredients: tuple[str, ...]
    filled_on: date
    days_supply: int


def classes_of(ingredients: Iterable[str], tables: AdherenceTables) -> tuple[AdherenceClass, ...]:
    """A combination product belongs to every class one of its ingredients is in (amlodipine/atorvastatin: statins)."""
    return tuple(sorted({tables.members[i] for i in ingredients if i in tables.members}))


def measure(
    fills: Sequence[DispensedFill],
    *,
    year: int,
    as_of: date,
    tables: AdherenceTables,
    diseases: Iterable[ChronicDisease] = (),
    previous_below: Iterable[AdherenceClass] = (),
) -> AdherenceMeasurement:
    """PDC of every class for the year, up to `as_of`; `newly_below` are classes below that were not before."""
    start, end = date(year, 1, 1), min(date(year, 12, 31), as_of)
    in_period = [f for f in fills if start <= f.filled_on <= end]
    disease_set = set(diseases)
    # Each fill's classes once, not once per class measured.
    fill_classes = [(f, classes_of(f.ingredients, tables)) for f in in_period]
    results = []
    for drug_class in CLASSES:
        class_fills = [f for f, classes in fill_classes if drug_class in classes]
        exclusion = _exclusion(drug_class, in_period, disease_set, tables)
        results.append(_class_pdc(drug_class, class_fills, end, exclusion))
    below = tuple(r.drug_class for r in results if r.pdc is not None and r.pdc < THRESHOLD)
    earlier = set(previous_below)
    return AdherenceMeasurement(
        measurement_year=year,
        period_end=end,
        threshold=THRESHOLD,
        classes=tuple(results),
        below_threshold=below,
        newly_below=tuple(c for c in below if c not in earlier),
    )


def _exclusion(
    drug_class: AdherenceClass, fills: Sequence[DispensedFill], diseases: set[ChronicDisease], tables: AdherenceTables
) -> str | None:
    for rule in tables.exclusions:
        if rule.drug_class != drug_class:
            continue
        if rule.kind == "condition" and rule.value in diseases:
            return rule.reason
        if rule.kind == "fill" and any(i.startswith(rule.value) for f in fills for i in f.ingredients):
            return rule.reason
    return None


def _class_pdc(
    drug_class: AdherenceClass, fills: Sequence[DispensedFill], end: date, exclusion: str | None
) -> ClassAdherence:
    dates = sorted({f.filled_on for f in fills})
    index = dates[0] if dates else None
    if exclusion is not None:
        return ClassAdherence(
            drug_class=drug_class, status="excluded", index_date=index, fills=len(fills), exclusion=exclusion
        )
    if len(dates) < 2 or index is None:
        return ClassAdherence(drug_class=drug_class, status="too-few-fills", index_date=index, fills=len(fills))
    covered = covered_days(fills, index, end)
    treatment = (end - index).days + 1
    return ClassAdherence(
        drug_class=drug_class,
        status="measured",
        pdc=round(covered / treatment, 4),
        days_covered=covered,
        treatment_days=treatment,
        index_date=index,
        fills=len(fills),
    )


def covered_days(fills: Sequence[DispensedFill], first: date, last: date) -> int:
    """Days from `first` to `last` with a supply: each drug's overlapping fills shifted, drugs of a class unioned."""
    by_drug: dict[tuple[str, ...], list[DispensedFill]] = {}
    for fill in fills:
        by_drug.setdefault(tuple(sorted(fill.ingredients)), []).append(fill)
    # Supplies as day-number intervals, merged, instead of a set of every covered date: the same count.
    lo, hi = first.toordinal(), last.toordinal()
    spans: list[tuple[int, int]] = []
    for drug_fills in by_drug.values():
        supplied_until = date.min.toordinal()
        for fill in sorted(drug_fills, key=lambda f: f.filled_on):
            begin = max(fill.filled_on.toordinal(), supplied_until + 1)
            supplied_until = begin + fill.days_supply - 1
            start, end = max(begin, lo), min(supplied_until, hi)
            if start <= end:
                spans.append((start, end))
    covered, reached = 0, lo - 1
    for start, end in sorted(spans):
        if end > reached:
            covered += end - max(start, reached + 1) + 1
            reached = end
    return covered
