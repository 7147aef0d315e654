"""Rule values of the DUR knowledge base: one clinical statement each, with its severity, tier and source."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["high", "moderate", "low"]
Tier = Literal["interruptive", "passive"]

SEVERITY_RANK: dict[str, int] = {"high": 0, "moderate": 1, "low": 2}

ANY_ROUTE = "*"
"""Route of a condition rule that holds however the drug is given, a locally applied product included (topical
fluorouracil in pregnancy)."""

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
    """A drug pair; precedence orders sources: 0 a row naming both drugs (curated, ONC high-priority, a label), 1 a
    curated or label row for a class or mechanism role, 2 ONC non-interruptive, 3 VA NDF-RT."""

    precedence: int
    origin: str


@dataclass(frozen=True, slots=True)
class DuplicationRule(Rule):
    """Two medications from class_a and class_b; with same_route, only when given by the same route
    (nasal and inhaled fluticasone treat different organs, so they are not a duplication). except_across names
    subclasses with distinct roles: one medication from each is a regimen, not a duplication (basal plus
    prandial insulin)."""

    class_a: str
    class_b: str
    same_route: bool = False
    except_across: tuple[str, ...] = ()


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
    or `egfr` (mL/min/1.73m², measured or CKD-EPI 2021 from creatinine). route, when set, limits the rule to
    the product the label is for (an injection's renal dosing is not the tablet's).
    """

    ingredient: str
    measure: Measure
    weight: WeightBasis
    min_value: float | None
    max_value: float | None
    max_daily: float | None
    unit: str | None
    route: str | None = None


@dataclass(frozen=True, slots=True)
class CodeSet:
    """What puts a patient in a condition or state: ICD-10-CM prefixes, SNOMED CT codes, words in the condition's
    text, and observation answers (LOINC code -> normalized answer texts, e.g. pregnancy status `pregnant`)."""

    icd10_prefixes: tuple[str, ...] = ()
    snomed_codes: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()
    answers: tuple[tuple[str, frozenset[str]], ...] = ()
    words: re.Pattern[str] | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # A keyword must start a word: "coma" is not in "glaucoma", nor "diabetes" in "prediabetes".
        if self.keywords:
            pattern = re.compile(r"\b(?:" + "|".join(re.escape(word) for word in self.keywords) + ")")
            object.__setattr__(self, "words", pattern)

    def __or__(self, other: CodeSet) -> CodeSet:
        answers: dict[str, frozenset[str]] = dict(self.answers)
        for code, values in other.answers:
            answers[code] = answers.get(code, frozenset()) | values
        return CodeSet(
            tuple(dict.fromkeys(self.icd10_prefixes + other.icd10_prefixes)),
            self.snomed_codes | other.snomed_codes,
            tuple(dict.fromkeys(self.keywords + other.keywords)),
            tuple(sorted(answers.items())),
        )


@dataclass(frozen=True, slots=True)
class ConditionRule(Rule):
    """A drug with a condition or patient state (pregnancy, smoking) the codes say the patient has.

    route, when set, limits the rule to that route (oral estrogen, not transdermal, after a VTE), or is `*` for
    any route; unset, the rule holds for every route by which the drug acts systemically (not for eye drops of a
    fluoroquinolone in myasthenia gravis, see `KnowledgeBase.systemic`); min_age
    (inclusive), max_age (exclusive: "younger than 12" is 12) and sex limit it to the population the label names;
    with max_daily it applies only above that daily dose (a hepatic cap), and asks for the dose when unknown.
    unless names an exception the label makes (warfarin in pregnancy unless a mechanical heart valve).
    """

    ingredient: str
    condition: str
    icd10_prefixes: tuple[str, ...]
    snomed_codes: frozenset[str]
    keywords: tuple[str, ...]
    include_resolved: bool
    route: str | None = None
    answers: tuple[tuple[str, frozenset[str]], ...] = ()
    min_age: int | None = None
    max_age: int | None = None
    sex: str | None = None
    max_daily: float | None = None
    unit: str | None = None
    unless: CodeSet = CodeSet()
    codes: CodeSet = field(default=CodeSet(), init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", CodeSet(self.icd10_prefixes, self.snomed_codes, self.keywords, self.answers))


@dataclass(frozen=True, slots=True)
class AllergyRule(Rule):
    """An allergy of allergen_class against drug_class; with ingredient, only that drug (a label's own
    hypersensitivity contraindication)."""

    allergen_class: str
    drug_class: str
    ingredient: str | None = None


@dataclass(frozen=True, slots=True)
class PairDoseLimit(Rule):
    """ingredient above max_daily while the patient also takes one of `partners` (simvastatin over 20 mg/day
    with amlodipine)."""

    ingredient: str
    partners: frozenset[str]
    max_daily: float
    unit: str
    route: str | None = None


@dataclass(frozen=True, slots=True)
class OmissionRule(Rule):
    """A documented condition (codes) without any of `therapy`: a passive reminder of a well-established
    treatment. Silent when the patient has an `unless` code (a contraindication) or is outside the ages."""

    condition: str
    codes: CodeSet
    include_resolved: bool
    therapy: str
    therapy_ingredients: frozenset[str]
    unless: CodeSet
    min_age: int | None
    max_age: int | None


@dataclass(frozen=True, slots=True)
class DrugOmissionRule(Rule):
    """A drug on the list that calls for a companion therapy the list lacks (START-style, passive): folic acid with
    methotrexate, a laxative with a regular opioid, bone protection with a systemic corticosteroid.

    trigger_ingredients are the drugs that call for it, counted only where they act systemically and, when routes are
    given, only by one of those routes (an unknown route counts); regular_only leaves out medications taken as
    needed. Silent when the patient takes (or is allergic to) one of therapy_ingredients, has an `unless` code, or is
    outside the ages."""

    trigger: str
    trigger_ingredients: frozenset[str]
    routes: tuple[str, ...]
    regular_only: bool
    therapy: str
    therapy_ingredients: frozenset[str]
    unless: CodeSet
    min_age: int | None
    max_age: int | None


@dataclass(frozen=True, slots=True)
class RenalInteractionRule(Rule):
    """ingredient with one of `partners` while kidney function is within [min_value, max_value): a label's interaction
    that holds only in a range of renal function (rivaroxaban with combined P-gp and moderate CYP3A inhibitors at CrCl
    15 to <80). measure and weight are read as for `RenalRule`."""

    ingredient: str
    partners: frozenset[str]
    measure: Measure
    weight: WeightBasis
    min_value: float | None
    max_value: float | None


PlausibilityCheck = Literal["ratio_to_max", "unit_slip", "units_per_dose"]


@dataclass(frozen=True, slots=True)
class PlausibilityRule(Rule):
    """When a dose is more likely an error than an intended dose.

    * `ratio_to_max`: the daily amount is at least `threshold` times the labelled maximum;
    * `unit_slip`: the dose written and the product's strength differ by `threshold`-fold or more in one
      mass unit, and read in the other mass unit (mg for mcg) they agree;
    * `units_per_dose`: `threshold` or more tablets/capsules at one administration.

    window (unit_slip): how close the other reading must come to one unit of the product (1/window to window).
    """

    check: PlausibilityCheck
    threshold: float
    window: float | None = None


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
