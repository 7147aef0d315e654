"""What drug-utilization review looks at: the patient's clinical context and each medication checked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal

from mtm.contracts import Allergy, Condition
from mtm.contracts.clinical import Observation

Sex = Literal["male", "female", "other", "unknown"]

_POSITIVE = frozenset({"positive", "detected", "present", "carrier"})
ACTIVE_CLINICAL_STATUS = frozenset({"active", "recurrence", "relapse"})
_ICD10_SYSTEMS = ("icd-10", "icd10")
_SNOMED_SYSTEMS = ("snomed",)
_NEGATIVE = frozenset({"negative", "not detected", "absent", "non-carrier", "noncarrier"})
_SPACES = re.compile(r"\s+")


_PHENOTYPE = re.compile(
    r"\b((?:likely |possible )?(?:poor|intermediate|normal|rapid|ultrarapid|extensive) metabolizer"
    r"|(?:possible )?(?:poor|decreased|normal|increased) function)\b"
)
_ABBREVIATED = {
    "pm": "poor metabolizer",
    "im": "intermediate metabolizer",
    "nm": "normal metabolizer",
    "em": "normal metabolizer",
    "rm": "rapid metabolizer",
    "um": "ultrarapid metabolizer",
}
_DIPLOTYPE = re.compile(r"(\*\w+(?:\.\d+)?)\s*/\s*(\*\w+(?:\.\d+)?)")


def normalize_phenotype(value: str) -> str:
    """The phenotype a result states, as labs write it: `CYP2C19 *2/*2 - Poor Metabolizer`, `Poor Metaboliser`
    and `PM` all give `poor metabolizer`; "extensive" is the old word for normal. A result that only gives star
    alleles comes back as the diplotype (`*2/*2`), for the knowledge base's CPIC tables to translate."""
    text = _SPACES.sub(" ", value.strip().lower()).replace("metaboliser", "metabolizer")
    text = text.replace("ultra-rapid", "ultrarapid").replace("ultra rapid", "ultrarapid")
    found = _PHENOTYPE.search(text)
    if found:
        return found.group(1).replace("extensive metabolizer", "normal metabolizer")
    words = text.split()
    if words and words[-1] in _ABBREVIATED:  # "PM", "CYP2D6 UM"
        return _ABBREVIATED[words[-1]]
    diplotype = _DIPLOTYPE.search(text)
    if diplotype:
        return f"{diplotype.group(1)}/{diplotype.group(2)}"
    return text


def normalize_hla_result(value: str) -> str:
    text = normalize_phenotype(value)
    if text in _POSITIVE:
        return "positive"
    if text in _NEGATIVE:
        return "negative"
    return text


@dataclass(frozen=True, slots=True)
class KidneyFunction:
    """The value renal rules compare against, and how it was obtained (stated in every renal message)."""

    value: float
    label: str


@dataclass(frozen=True, slots=True)
class CodedCondition:
    """A condition read once per check for matching: its code by system, its text lowercased, and whether active
    (clinicalStatus active, recurrence or relapse; anything else is history)."""

    condition: Condition
    icd10: str
    snomed: str
    text: str
    active: bool

    @classmethod
    def of(cls, condition: Condition) -> CodedCondition:
        code = (condition.code or "").strip()
        system = (condition.system or "").lower()
        # A code without a system may be either: it is tried as both.
        icd10 = code.upper() if code and (not system or any(t in system for t in _ICD10_SYSTEMS)) else ""
        snomed = code if code and (not system or any(t in system for t in _SNOMED_SYSTEMS)) else ""
        active = condition.clinical_status.lower() in ACTIVE_CLINICAL_STATUS
        return cls(condition, icd10, snomed, condition.text.lower(), active)


@dataclass(frozen=True, slots=True)
class PatientContext:
    """Patient facts the checks use; pgx/hla keys are upper-cased and values normalized on creation.

    pgx maps a gene to its phenotype (`{"CYP2C19": "poor metabolizer"}`); hla maps an allele to
    `positive`/`negative` (`{"HLA-B*57:01": "positive"}`). observations are coded results that state a patient
    state (pregnancy status, smoking status); `answers` keeps the latest answer per code, lowercased.
    """

    age_years: int | None = None
    sex: Sex = "unknown"
    weight_kg: float | None = None
    height_cm: float | None = None
    egfr: float | None = None
    serum_creatinine_mg_dl: float | None = None
    conditions: tuple[Condition, ...] = ()
    allergies: tuple[Allergy, ...] = ()
    pgx: Mapping[str, str] = field(default_factory=dict)
    hla: Mapping[str, str] = field(default_factory=dict)
    observations: tuple[Observation, ...] = ()
    answers: Mapping[str, str] = field(init=False, default_factory=dict)
    coded_conditions: tuple[CodedCondition, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        pgx = {gene.strip().upper(): normalize_phenotype(value) for gene, value in self.pgx.items()}
        hla = {allele.strip().upper(): normalize_hla_result(value) for allele, value in self.hla.items()}
        object.__setattr__(self, "pgx", MappingProxyType(pgx))
        object.__setattr__(self, "hla", MappingProxyType(hla))
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "coded_conditions", tuple(CodedCondition.of(c) for c in self.conditions))
        object.__setattr__(self, "allergies", tuple(self.allergies))
        object.__setattr__(self, "observations", tuple(self.observations))
        answers: dict[str, str] = {}
        oldest = datetime.min.replace(tzinfo=UTC)
        for observation in sorted(self.observations, key=lambda obs: obs.effective or oldest):
            if observation.code and observation.value_text:
                answers[observation.code] = _SPACES.sub(" ", observation.value_text.strip().lower())
        object.__setattr__(self, "answers", MappingProxyType(answers))

    def kidney_function(self, measure: str = "crcl", weight: str = "actual") -> KidneyFunction | None:
        """The kidney function a rule's label states: `crcl` or `egfr`; None when it cannot be had."""
        return self.estimated_gfr() if measure == "egfr" else self.creatinine_clearance(weight)

    def creatinine_clearance(self, weight: str = "actual") -> KidneyFunction | None:
        """Cockcroft-Gault CrCl in mL/min with actual body weight, or adjusted body weight when the label asks.

        A measured eGFR is not a substitute: labels that dose by CrCl (dabigatran, enoxaparin, nitrofurantoin...)
        were studied with it, and eGFR overstates clearance in the old and the light. With sex unknown the female
        factor (0.85) is applied, which errs towards flagging.
        """
        if self.age_years is None or self.weight_kg is None or not self.serum_creatinine_mg_dl:
            return None
        if self.serum_creatinine_mg_dl <= 0 or self.weight_kg <= 0:
            return None
        body_weight, basis = self.weight_kg, "actual body weight"
        if weight == "adjusted":
            ideal = self.ideal_body_weight()
            if ideal is None:
                return None
            if self.weight_kg > 1.2 * ideal:
                body_weight, basis = ideal + 0.4 * (self.weight_kg - ideal), "adjusted body weight"
        clearance = (140 - self.age_years) * body_weight / (72 * self.serum_creatinine_mg_dl)
        if self.sex != "male":
            clearance *= 0.85
        return KidneyFunction(clearance, f"CrCl {clearance:.0f} mL/min (Cockcroft-Gault, {basis} {body_weight:.0f} kg)")

    def ideal_body_weight(self) -> float | None:
        """Devine ideal body weight in kg; needs height (female formula when sex is unknown)."""
        if self.height_cm is None or self.height_cm <= 0:
            return None
        base = 50.0 if self.sex == "male" else 45.5
        return base + 0.9 * (self.height_cm - 152.4)

    def estimated_gfr(self) -> KidneyFunction | None:
        """Measured eGFR, else CKD-EPI 2021 (race-free) from creatinine, age and sex; None when neither can be had."""
        if self.egfr is not None:
            return KidneyFunction(self.egfr, f"eGFR {self.egfr:.0f} mL/min/1.73m²")
        creatinine = self.serum_creatinine_mg_dl
        if self.age_years is None or creatinine is None or creatinine <= 0:
            return None
        # Unknown sex takes the female equation: it gives the lower eGFR for a given creatinine.
        kappa, alpha, factor = (0.9, -0.302, 1.0) if self.sex == "male" else (0.7, -0.241, 1.012)
        ratio = creatinine / kappa
        value = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**self.age_years * factor
        return KidneyFunction(value, f"eGFR {value:.0f} mL/min/1.73m² (CKD-EPI 2021 from creatinine)")


@dataclass(frozen=True, slots=True)
class CheckedMedication:
    """One medication on the current list.

    ingredients are lowercase US generic names without salts; daily_amounts maps an ingredient to its
    total amount per day in a canonical unit (`mg`, `mcg`, `g`, `unit`, `meq`, `ml`). dose_value and
    dose_unit are the dose as the list wrote it (`100`, `mg`); strengths the product's strength per ingredient
    as its name states it (`(100.0, "mcg")`, `(20.0, "mg/ml")`), for telling a unit or product slip from an
    overdose. as_needed: taken only when needed (PRN), not on a schedule.
    """

    ingredients: tuple[str, ...]
    text: str
    daily_amounts: Mapping[str, tuple[float, str]] = field(default_factory=dict)
    frequency_per_day: float | None = None
    route: str | None = None
    resolved: bool = True
    dose_value: float | None = None
    dose_unit: str | None = None
    strengths: Mapping[str, tuple[float, str]] = field(default_factory=dict)
    as_needed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ingredients", tuple(self.ingredients))
        object.__setattr__(self, "daily_amounts", MappingProxyType(dict(self.daily_amounts)))
        object.__setattr__(self, "strengths", MappingProxyType(dict(self.strengths)))
