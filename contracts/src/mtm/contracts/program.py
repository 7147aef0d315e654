"""Events of the MTM program: pharmacy fills, CMS Part D targeting, enrolment and adherence (version 1)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import ClassVar, Literal

from pydantic import Field

from mtm.contracts.clinical import MedicationEntry
from mtm.contracts.envelope import EventEnvelope, Frozen
from mtm.contracts.identity import Actor
from mtm.contracts.limits import MAX_INGREDIENTS, Code, FhirId, Text

ChronicDisease = Literal[
    "alzheimers-disease",
    "bone-disease-arthritis",
    "heart-failure",
    "diabetes",
    "dyslipidemia",
    "end-stage-renal-disease",
    "hiv-aids",
    "hypertension",
    "mental-health",
    "respiratory-disease",
]
"""The ten core chronic diseases of 42 CFR 423.153(d)(2)(iii) as of contract year 2025."""
TargetingBasis = Literal["chronic-diseases-drugs-cost", "drug-management-program"]
CostBasis = Literal["claims", "estimate"]
EvaluationTrigger = Literal["discharge", "fill", "quarterly", "program-year"]
DisenrolmentReason = Literal["death", "plan-disenrolled", "opted-out", "other"]
"""The CMS reasons a beneficiary left the MTM program: death, disenrolled from the plan, request by the
beneficiary (opt-out), other."""
AdherenceClass = Literal["statins", "ras-antagonists", "diabetes-non-insulin"]
AdherenceStatus = Literal["measured", "too-few-fills", "excluded"]


# --- pharmacy fills -------------------------------------------------------------------------------------------


class Dispense(Frozen):
    """One pharmacy fill (FHIR MedicationDispense, NCPDP claim): what left the pharmacy, when, for how long."""

    dispense_id: str = Field(
        min_length=1, max_length=200, description="The pharmacy's id of this fill (Rx and fill number, claim id)."
    )
    medication: MedicationEntry = Field(description="The drug as dispensed: text, RxNorm code, directions.")
    ingredients: tuple[Text, ...] = Field(
        default=(),
        max_length=MAX_INGREDIENTS,
        description="Lowercase generic ingredients resolved through mtm.drugs; empty when unresolved.",
    )
    quantity: float | None = Field(default=None, ge=0)
    quantity_unit: Code | None = None
    days_supply: int = Field(ge=1, le=400, description="Days the dispensed quantity lasts as directed.")
    filled_on: date = Field(description="Date of service: when the fill was handed over (or prepared).")
    pharmacy_id: FhirId | None = None
    prescriber_id: FhirId | None = None
    total_cost: float | None = Field(
        default=None, ge=0, description="Gross drug cost of the fill in US dollars (ingredient cost + fees), if known."
    )
    source_format: Literal["mtm", "fhir-r4"] = "mtm"


class MedicationDispensed(EventEnvelope):
    """A pharmacy dispensed a medication to the patient."""

    EVENT_NAME: ClassVar[str] = "medication_dispensed"
    type: Literal["mtm.medication_dispensed.v1"] = "mtm.medication_dispensed.v1"
    data: Dispense


# --- targeting ------------------------------------------------------------------------------------------------


class TargetingCriteria(Frozen):
    """The plan's thresholds for one program year (42 CFR 423.153(d)(2))."""

    program_year: int = Field(ge=2000, le=2100)
    min_chronic_diseases: int = Field(ge=2, le=3, description="N: a plan may require at most 3.")
    min_maintenance_drugs: int = Field(ge=2, le=8, description="M: a plan may require at most 8.")
    annual_cost_threshold: float = Field(gt=0, description="US dollars; $1,623 for 2025.")


class TargetingFindings(Frozen):
    """What the patient's record showed, and which criteria it met."""

    chronic_diseases: tuple[ChronicDisease, ...] = ()
    maintenance_drugs: tuple[str, ...] = Field(default=(), description="One name per drug (ingredients joined).")
    annual_cost: float = Field(ge=0, description="Likely annual drug cost, US dollars.")
    cost_basis: CostBasis
    drug_management_program_at_risk: bool = False
    meets_chronic_diseases: bool
    meets_maintenance_drugs: bool
    meets_annual_cost: bool


class EligibilityDetermination(Frozen):
    program_year: int = Field(ge=2000, le=2100)
    determined_on: date
    eligible: bool
    basis: TargetingBasis | None = Field(default=None, description="Why eligible; none when not eligible.")
    criteria: TargetingCriteria
    findings: TargetingFindings
    reasons: tuple[str, ...] = Field(description="Plain sentences: each criterion, met or not, with the figures.")
    trigger: EvaluationTrigger
    inputs_considered: int = Field(
        ge=0, description="How many of the patient's inputs (discharges, fills) the determination took into account."
    )


class MtmEligibilityDetermined(EventEnvelope):
    """The patient's MTM eligibility was (re-)evaluated against the year's targeting criteria."""

    EVENT_NAME: ClassVar[str] = "mtm_eligibility_determined"
    type: Literal["mtm.mtm_eligibility_determined.v1"] = "mtm.mtm_eligibility_determined.v1"
    data: EligibilityDetermination


# --- enrolment ------------------------------------------------------------------------------------------------


class Enrolment(Frozen):
    """Opt-out enrolment of a targeted beneficiary for one program year; a CMR is offered from here."""

    program_year: int = Field(ge=2000, le=2100)
    enrolled_on: date
    criteria_met_on: date = Field(description="The date the patient first met the targeting criteria this year.")
    basis: TargetingBasis
    eligibility_event_id: uuid.UUID = Field(description="The MtmEligibilityDetermined event that targeted them.")
    method: Literal["opt-out"] = "opt-out"


class MtmEnrolled(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "mtm_enrolled"
    type: Literal["mtm.mtm_enrolled.v1"] = "mtm.mtm_enrolled.v1"
    data: Enrolment


class Disenrolment(Frozen):
    program_year: int = Field(ge=2000, le=2100)
    disenrolled_on: date
    reason: DisenrolmentReason
    note: str | None = Field(default=None, max_length=500)
    actor: Actor | None = Field(default=None, description="Who recorded it, as their token said.")


class MtmDisenrolled(EventEnvelope):
    """The beneficiary left the MTM program for the rest of the program year."""

    EVENT_NAME: ClassVar[str] = "mtm_disenrolled"
    type: Literal["mtm.mtm_disenrolled.v1"] = "mtm.mtm_disenrolled.v1"
    data: Disenrolment


# --- adherence ------------------------------------------------------------------------------------------------


class ClassAdherence(Frozen):
    """Proportion of days covered (PDC) for one drug class over the treatment period so far."""

    drug_class: AdherenceClass
    status: AdherenceStatus
    pdc: float | None = Field(default=None, ge=0, le=1, description="Covered days / days in the treatment period.")
    days_covered: int = Field(default=0, ge=0)
    treatment_days: int = Field(default=0, ge=0, description="From the first fill of the year to the period's end.")
    index_date: date | None = None
    fills: int = Field(default=0, ge=0)
    exclusion: str | None = Field(default=None, description="Why the patient is excluded from this class's measure.")


class AdherenceMeasurement(Frozen):
    measurement_year: int = Field(ge=2000, le=2100)
    period_end: date = Field(description="Last day counted: the measurement date, at most December 31.")
    threshold: float = Field(default=0.8, gt=0, le=1)
    classes: tuple[ClassAdherence, ...]
    below_threshold: tuple[AdherenceClass, ...] = Field(default=(), description="Measured classes, PDC < threshold.")
    newly_below: tuple[AdherenceClass, ...] = Field(
        default=(),
        description="Classes below the threshold now that were not in the patient's previous measurement this year: "
        "each calls for a targeted medication review.",
    )


class AdherenceMeasured(EventEnvelope):
    """The patient's adherence (PDC per class) was measured from their fills."""

    EVENT_NAME: ClassVar[str] = "adherence_measured"
    type: Literal["mtm.adherence_measured.v1"] = "mtm.adherence_measured.v1"
    data: AdherenceMeasurement


PROGRAM_EVENT_CLASSES: tuple[type[EventEnvelope], ...] = (
    MedicationDispensed,
    MtmEligibilityDetermined,
    MtmEnrolled,
    MtmDisenrolled,
    AdherenceMeasured,
)
