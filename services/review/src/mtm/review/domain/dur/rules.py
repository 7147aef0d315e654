"""Rule values of the DUR knowledge base: one clinical statement each, with its severity, tier and source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["high", "moderate", "low"]
Tier = Literal["interruptive", "passive"]

SEVERITY_RANK: dict[str, int] = {"high": 0, "moderate": 1, "low": 2}

SAME_INGREDIENT = "same_ingredient"
"""Class token of duplication and allergy rules that apply to one ingredient found twice."""


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    severity: Severity
    tier: Tier
    message: str
    source: str


@dataclass(frozen=True, slots=True)
class InteractionRule(Rule):
    """A drug pair; precedence orders sources (0 curated/ONC high, 1 ONC non-interruptive, 2 VA NDF-RT)."""

    precedence: int
    origin: str


@dataclass(frozen=True, slots=True)
class DuplicationRule(Rule):
    """Two medications from class_a and class_b; with same_route, only when given by the same route
    (nasal and inhaled fluticasone treat different organs, so they are not a duplication)."""

    class_a: str
    class_b: str
    same_route: bool = False


@dataclass(frozen=True, slots=True)
class DoseLimit(Rule):
    ingredient: str
    route: str
    max_daily: float
    unit: str


@dataclass(frozen=True, slots=True)
class DoseSchedule(Rule):
    """A dose of at least min_single_dose must not be given more often than max_frequency_per_day."""

    ingredient: str
    route: str
    min_single_dose: float
    unit: str
    max_frequency_per_day: float


Measure = Literal["crcl", "egfr"]
WeightBasis = Literal["actual", "adjusted"]


@dataclass(frozen=True, slots=True)
class RenalRule(Rule):
    """Applies when min_value <= kidney function < max_value; with max_daily, only above that daily dose.

    measure is the one the label states: `crcl` (Cockcroft-Gault, with the body weight the label names)
    or `egfr` (mL/min/1.73m², measured or CKD-EPI 2021 from creatinine).
    """

    ingredient: str
    measure: Measure
    weight: WeightBasis
    min_value: float | None
    max_value: float | None
    max_daily: float | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class ConditionRule(Rule):
    """route, when set, limits the rule to that route (oral estrogen, not transdermal, after a VTE)."""

    ingredient: str
    condition: str
    icd10_prefixes: tuple[str, ...]
    snomed_codes: frozenset[str]
    keywords: tuple[str, ...]
    include_resolved: bool
    route: str | None = None


@dataclass(frozen=True, slots=True)
class AllergyRule(Rule):
    allergen_class: str
    drug_class: str


@dataclass(frozen=True, slots=True)
class GeriatricRule(Rule):
    """ingredient is None for rules that match the medication text (e.g. `sliding scale`)."""

    ingredient: str | None
    min_age: int
    max_daily: float | None
    unit: str | None
    text_contains: str | None


@dataclass(frozen=True, slots=True)
class PharmacogenomicRule(Rule):
    """gene is a gene symbol (`CYP2C19`) or an HLA allele (`HLA-B*57:01`); phenotype is normalized."""

    gene: str
    phenotype: str
    ingredient: str


@dataclass(frozen=True, slots=True)
class CombinationRule(Rule):
    """Medications from each of `classes` (distinct medications), at least min_count of them in all.

    One class with min_count 2 is "two or more anticholinergics"; two classes with min_count 2 is a
    class pair. min_age and sex restrict it to the population the criterion names (Beers: 65+, women);
    routes, when given, to medications given by one of them (an unknown route counts, to err towards flagging).
    """

    kind: str
    classes: tuple[str, ...]
    min_count: int
    min_age: int | None
    sex: str | None
    routes: tuple[str, ...] = ()


Fact = Literal["age_years", "weight_kg", "serum_creatinine_mg_dl"]


@dataclass(frozen=True, slots=True)
class Criterion:
    """One patient fact compared with a threshold, e.g. age_years >= 80."""

    fact: Fact
    operator: Literal[">=", "<=", ">", "<"]
    threshold: float

    def holds(self, value: float) -> bool:
        if self.operator == ">=":
            return value >= self.threshold
        if self.operator == "<=":
            return value <= self.threshold
        if self.operator == ">":
            return value > self.threshold
        return value < self.threshold

    def __str__(self) -> str:
        return f"{self.fact.replace('_', ' ')} {self.operator} {self.threshold:g}"


@dataclass(frozen=True, slots=True)
class CriteriaRule(Rule):
    """A dose rule decided by how many criteria hold (apixaban: 2 of age >= 80, weight <= 60 kg,
    creatinine >= 1.5 mg/dL). Fires when min_met <= criteria met <= max_met and the daily dose is within
    [min_daily, max_daily] (either bound optional)."""

    ingredient: str
    criteria: tuple[Criterion, ...]
    min_met: int
    max_met: int
    min_daily: float | None
    max_daily: float | None
    unit: str
