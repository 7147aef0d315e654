"""Code systems and codes of the mtm FHIR input convention."""

from __future__ import annotations

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LIST_ITEM_FLAG = "http://terminology.hl7.org/CodeSystem/list-item-flag"
MEDICATION_REQUEST_CATEGORY = "http://terminology.hl7.org/CodeSystem/medicationrequest-category"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

HOME_MEDICATIONS_LIST = "10160-0"
"""History of Medication use Narrative: what the patient took before admission."""
DISCHARGE_MEDICATIONS_LIST = "10183-2"
"""Hospital discharge medications Narrative: what the patient leaves with."""

EGFR_CODES = frozenset({"62238-1", "33914-3", "98979-8"})
CREATININE_CODES = frozenset({"2160-0", "38483-4"})
"""Serum/plasma creatinine; 38483-4 (creatinine in blood) is what Synthea emits."""
BODY_WEIGHT = "29463-7"
BODY_HEIGHT = "8302-2"
"""Body height: with weight, gives the adjusted body weight some renal dosing labels ask for."""

OBSERVATION_LABELS: dict[str, str] = {
    **dict.fromkeys(EGFR_CODES, "eGFR"),
    **dict.fromkeys(CREATININE_CODES, "Creatinine"),
    BODY_WEIGHT: "Body weight",
    BODY_HEIGHT: "Body height",
}

PATIENT_STATE_LABELS: dict[str, str] = {
    "82810-3": "Pregnancy status",
    "72166-2": "Tobacco smoking status",
}
"""Coded observations that state a patient state drug labels name (pregnancy, smoking); kept as their answer text."""
