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
    class_a: str
    class_b: str


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


@dataclass(frozen=True, slots=True)
class RenalRule(Rule):
    """Applies when min_value <= kidney function < max_value; with max_daily, only above that daily dose."""

    ingredient: str
    min_value: float | None
    max_value: float | None
    max_daily: float | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class ConditionRule(Rule):
    ingredient: str
    condition: str
    icd10_prefixes: tuple[str, ...]
    snomed_codes: frozenset[str]
    keywords: tuple[str, ...]
    include_resolved: bool


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
