"""What a pharmacist documents when completing a medication review (CMS MTM data elements, FHIR-shaped)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import Field, model_validator

from mtm.contracts.envelope import Frozen
from mtm.contracts.limits import (
    MAX_ALLERGIES,
    MAX_FOLLOW_UPS,
    MAX_MITIGATIONS,
    MAX_PLAN_ITEMS,
    MAX_PLAN_STEPS,
    MAX_PML,
    MAX_PROBLEMS,
    MAX_RECOMMENDATION,
    FhirId,
    Ingredient,
    Remark,
    Text,
)

Severity = Literal["high", "moderate", "low"]
MtmService = Literal["cmr", "tmr"]
"""The CMS Part D MTM service a completed review counts as: comprehensive or targeted medication review."""
DeliveryMethod = Literal["face-to-face", "telephone", "telehealth", "other"]
"""CMS MTM program data element "method of delivery for the CMR"."""
ReviewRecipient = Literal["beneficiary", "prescriber", "caregiver", "other-authorized-individual"]
"""CMS MTM data element "recipient of CMR": the member, their prescriber, a caregiver, another authorized individual."""
ProviderType = Literal[
    "physician",
    "registered-nurse",
    "licensed-practical-nurse",
    "nurse-practitioner",
    "physician-assistant",
    "local-pharmacist",
    "ltc-consultant-pharmacist",
    "plan-sponsor-pharmacist",
    "pbm-pharmacist",
    "mtm-vendor-local-pharmacist",
    "mtm-vendor-in-house-pharmacist",
    "hospital-pharmacist",
    "pharmacist-other",
    "other",
]
"""CMS MTM data element "qualified provider who performed the CMR"."""
DtpCategory = Literal[
    "unnecessary-drug-therapy",
    "needs-additional-drug-therapy",
    "ineffective-drug",
    "dosage-too-low",
    "adverse-drug-reaction",
    "dosage-too-high",
    "adherence",
]
"""The seven drug therapy problem categories of Cipolle, Strand and Morley (Pharmaceutical Care Practice)."""
MitigationCode = Literal[
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17", "18", "19"
]  # fmt: skip
"""HL7 v3 ActDetectedIssueManagementCode (code system http://terminology.hl7.org/CodeSystem/v3-ActCode), the
clinical codes 1-19: 1 therapy appropriate, 2 assessed patient, 3 patient explanation, 4 consulted other source,
5 consulted prescriber, 6 prescriber declined change, 7 interacting therapy no longer active/planned, 8 other action
taken, 9 instituted ongoing monitoring program, 10 provided patient education, 11 added concurrent therapy,
12 temporarily suspended concurrent therapy, 13 stopped concurrent therapy, 14 supply appropriate, 15 replacement,
16 vacation supply, 17 weekend supply, 18 leave of absence, 19 consulted supplier."""


class Mitigation(Frozen):
    """What was done about a problem (FHIR DetectedIssue.mitigation)."""

    action: MitigationCode
    on: date | None = Field(default=None, description="When it was done; the review's date when absent.")
    note: Remark | None = None


class DrugTherapyProblem(Frozen):
    """A drug therapy problem the pharmacist found (FHIR DetectedIssue), linked to what raised it, if anything."""

    problem_id: uuid.UUID
    category: DtpCategory
    severity: Severity = "moderate"
    detail: str = Field(min_length=1, max_length=MAX_RECOMMENDATION)
    ingredients: tuple[Ingredient, ...] = Field(default=(), max_length=10)
    alert: int | None = Field(default=None, ge=0, description="Position of the task's alert it came from.")
    discrepancy: int | None = Field(default=None, ge=0, description="Position of the task's discrepancy it came from.")
    rule_id: Text | None = Field(default=None, description="The alert's rule, filled in by the review service.")
    mitigations: tuple[Mitigation, ...] = Field(default=(), max_length=MAX_MITIGATIONS)

    @model_validator(mode="after")
    def _one_origin(self) -> DrugTherapyProblem:
        if self.alert is not None and self.discrepancy is not None:
            raise ValueError("a problem comes from one alert or one discrepancy, not both")
        return self


class PersonalMedication(Frozen):
    """One row of the Personal Medication List (form CMS-10396), in the member's words."""

    name: Text = Field(description="Medication name and strength, e.g. `Atorvastatin 40 mg tablet`.")
    ingredients: tuple[Ingredient, ...] = Field(
        default=(), max_length=10, description="Lowercase generics (to find its patient education)."
    )
    rxnorm_code: str | None = Field(default=None, pattern=r"^[0-9]{1,10}$")
    how_i_use_it: Remark = Field(description="E.g. `1 tablet by mouth every evening`.")
    why_i_use_it: Remark | None = None
    prescriber: Text | None = None
    started: date | None = None
    stopped: date | None = None
    why_stopped: Remark | None = None


class ActionPlanItem(Frozen):
    """One topic of the Medication Action Plan: what we talked about, and what I need to do."""

    topic: Text = Field(description='"What we talked about".')
    steps: tuple[Remark, ...] = Field(min_length=1, max_length=MAX_PLAN_STEPS, description='"What I need to do".')
    recommendation_id: uuid.UUID | None = Field(default=None, description="The recommendation it carries out.")


class ReviewDocumentation(Frozen):
    """The record of a CMR or TMR: how it was done, the problems found, and the member's action plan and list."""

    performed_on: date
    delivery_method: DeliveryMethod
    recipient: ReviewRecipient = "beneficiary"
    provider_type: ProviderType = "local-pharmacist"
    problems: tuple[DrugTherapyProblem, ...] = Field(default=(), max_length=MAX_PROBLEMS)
    action_plan: tuple[ActionPlanItem, ...] = Field(default=(), max_length=MAX_PLAN_ITEMS)
    medications: tuple[PersonalMedication, ...] = Field(
        default=(), max_length=MAX_PML, description="The Personal Medication List as reviewed with the member."
    )
    allergies: tuple[Text, ...] = Field(
        default=(), max_length=MAX_ALLERGIES, description='"Allergies or side effects", in the member\'s words.'
    )


class PlannedFollowUp(Frozen):
    due: date
    reason: Remark


class ActionPlanDocument(Frozen):
    """What the member takes home after a CMR (form CMS-10396): the reply of `GetActionPlan`, ready to render."""

    patient_id: FhirId
    birth_date: date | None = None
    task_id: uuid.UUID
    pharmacist_id: str
    performed_on: date
    delivery_method: DeliveryMethod
    recipient: ReviewRecipient
    provider_type: ProviderType
    action_plan: tuple[ActionPlanItem, ...] = ()
    medications: tuple[PersonalMedication, ...] = ()
    allergies: tuple[str, ...] = ()
    follow_ups: tuple[PlannedFollowUp, ...] = Field(default=(), max_length=MAX_FOLLOW_UPS)
    deliver_by: date = Field(description="14 days after the CMR.")
    delivered_on: date | None = None
