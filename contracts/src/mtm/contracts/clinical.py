"""Clinical value objects carried inside events (FHIR-shaped, trimmed to what consumers need)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from mtm.contracts.envelope import Frozen
from mtm.contracts.limits import MAX_CODE, MAX_TEXT, Code, FhirId, Text


class MedicationStatus(StrEnum):
    """FHIR MedicationRequest/MedicationStatement status, trimmed to what reconciliation distinguishes."""

    ACTIVE = "active"
    ON_HOLD = "on-hold"
    STOPPED = "stopped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class ListItemFlag(StrEnum):
    """HL7 list-item-flag (http://terminology.hl7.org/CodeSystem/list-item-flag) codes 01-06."""

    UNCHANGED = "01"
    CHANGED = "02"
    CANCELLED = "03"
    PRESCRIBED = "04"
    CEASED = "05"
    SUSPENDED = "06"


class MedicationEntry(Frozen):
    """One medication as a list states it: what the patient took at home or leaves with."""

    entry_id: str | None = Field(
        default=None, max_length=128, description="Id of the source resource (MedicationStatement/Request)."
    )
    text: str = Field(
        min_length=1, max_length=MAX_TEXT, description="Medication as written, e.g. `Simvastatin 40 MG Oral Tablet`."
    )
    rxnorm_code: str | None = Field(default=None, pattern=r"^[0-9]{1,10}$")
    dose_value: float | None = Field(default=None, ge=0)
    dose_unit: str | None = Field(
        default=None, max_length=MAX_CODE, description="UCUM or free unit, e.g. `mg`, `tablet`, `mL`."
    )
    frequency: str | None = Field(
        default=None, max_length=MAX_CODE, description="As written: `BID`, `twice daily`, `every 12 hours`."
    )
    frequency_per_day: float | None = Field(default=None, ge=0, description="Administrations per day, when known.")
    as_needed: bool = False
    route: str | None = Field(
        default=None, max_length=MAX_CODE, description="As written: `oral`, `PO`, `by mouth`, `IV`."
    )
    status: MedicationStatus = MedicationStatus.ACTIVE
    status_reason: str | None = Field(
        default=None, max_length=MAX_TEXT, description="Why it was stopped or held, when documented."
    )
    list_flag: ListItemFlag | None = Field(default=None, description="HL7 list-item-flag on the discharge entry.")
    change_documented: bool = Field(
        default=False, description="The discharge system marked this entry as an intended change."
    )


class Condition(Frozen):
    system: str | None = Field(default=None, max_length=256, description="Code system URI (ICD-10-CM, SNOMED CT).")
    code: Code | None = None
    text: Text
    clinical_status: Code = "active"


class Allergy(Frozen):
    system: str | None = Field(default=None, max_length=256)
    code: Code | None = None
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="Substance as written, e.g. `Penicillin V`.")
    category: Literal["medication", "food", "environment", "biologic"] | None = None
    criticality: Literal["low", "high", "unable-to-assess"] | None = None


class Observation(Frozen):
    """A lab, vital or pharmacogenomic result."""

    system: str | None = Field(default="http://loinc.org", max_length=256)
    code: str | None = Field(
        default=None, max_length=MAX_CODE, description="LOINC code, e.g. `62238-1` eGFR, `2160-0` creatinine."
    )
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="E.g. `eGFR`, `CYP2C19 phenotype`, `HLA-B*57:01`.")
    value: float | None = None
    unit: Code | None = None
    value_text: str | None = Field(
        default=None, max_length=MAX_TEXT, description="Coded or text result, e.g. `Poor metabolizer`."
    )
    effective: AwareDatetime | None = None


class PatientDemographics(Frozen):
    patient_id: str = Field(pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    birth_date: date | None = None
    sex: Literal["male", "female", "other", "unknown"] = "unknown"


class CareTeam(Frozen):
    attending_physician_id: FhirId | None = None
    primary_care_physician_id: FhirId | None = None

    @property
    def responsible_physician_id(self) -> str | None:
        """Follow-up after discharge belongs to primary care; the attending answers when there is none."""
        return self.primary_care_physician_id or self.attending_physician_id
