"""The CMS beneficiary-level MTM file for a contract year, the CMR completion rate and a summary (pure).

Completion rate for CMR, in our words after the public description of the PQA measure used in the Part D Star
Ratings: of the program's enrollees aged 18 or more who were enrolled for at least 60 days of the year, the share
who received a CMR in the year. No PQA text is reproduced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

# CMS reporting codes of the reason a beneficiary left the MTM program.
OPT_OUT_CODES = {"death": "01", "plan-disenrolled": "02", "opted-out": "03", "other": "04"}
MIN_ENROLLED_DAYS = 60
MIN_AGE = 18

COLUMNS = (
    "beneficiary_id",
    "date_of_birth",
    "contract_year",
    "met_targeting_criteria",
    "targeting_basis",
    "date_met_targeting_criteria",
    "mtm_enrollment_date",
    "opt_out_date",
    "opt_out_reason_code",
    "offered_cmr",
    "initial_cmr_offer_date",
    "received_cmr",
    "cmr_dates",
    "cmr_delivery_method",
    "cmr_provider_type",
    "cmr_recipient",
    "tmr_count",
    "prescriber_recommendation_count",
    "therapy_change_count",
)


@dataclass(frozen=True)
class Beneficiary:
    """One enrolment of the year with what happened in it."""

    patient_id: str
    birth_date: date | None
    year: int
    basis: str
    criteria_met_on: date
    enrolled_on: date
    disenrolled_on: date | None = None
    disenrolment_reason: str | None = None
    cmr_offers: Sequence[date] = ()
    cmrs: Sequence[date] = ()
    cmr_delivery_method: str | None = None
    cmr_provider_type: str | None = None
    cmr_recipient: str | None = None
    tmrs: int = 0
    prescriber_recommendations: int = 0
    therapy_changes: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "beneficiary_id": self.patient_id,
            "date_of_birth": _day(self.birth_date),
            "contract_year": self.year,
            "met_targeting_criteria": "Y",
            "targeting_basis": self.basis,
            "date_met_targeting_criteria": _day(self.criteria_met_on),
            "mtm_enrollment_date": _day(self.enrolled_on),
            "opt_out_date": _day(self.disenrolled_on),
            "opt_out_reason_code": OPT_OUT_CODES.get(self.disenrolment_reason or "", ""),
            "offered_cmr": "Y" if self.cmr_offers else "N",
            "initial_cmr_offer_date": _day(min(self.cmr_offers) if self.cmr_offers else None),
            "received_cmr": "Y" if self.cmrs else "N",
            "cmr_dates": ";".join(_day(d) for d in sorted(self.cmrs)),
            "cmr_delivery_method": self.cmr_delivery_method or "",
            "cmr_provider_type": self.cmr_provider_type or "",
            "cmr_recipient": self.cmr_recipient or "",
            "tmr_count": self.tmrs,
            "prescriber_recommendation_count": self.prescriber_recommendations,
            "therapy_change_count": self.therapy_changes,
        }

    def in_completion_rate(self, as_of: date) -> bool:
        """Aged 18 or more at the start of the year and enrolled at least 60 days of it (up to `as_of`)."""
        start = date(self.year, 1, 1)
        if self.birth_date is None or _age(self.birth_date, start) < MIN_AGE:
            return False
        end = min(filter(None, (self.disenrolled_on, date(self.year, 12, 31), as_of)))
        return (end - max(self.enrolled_on, start)).days + 1 >= MIN_ENROLLED_DAYS


@dataclass(frozen=True)
class CmsReport:
    year: int
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def cms_report(year: int, beneficiaries: Sequence[Beneficiary], as_of: date) -> CmsReport:
    ordered = sorted(beneficiaries, key=lambda b: b.patient_id)
    eligible = [b for b in ordered if b.in_completion_rate(as_of)]
    completed = [b for b in eligible if b.cmrs]
    opt_outs: dict[str, int] = {}
    for b in ordered:
        if b.disenrolment_reason:
            opt_outs[b.disenrolment_reason] = opt_outs.get(b.disenrolment_reason, 0) + 1
    summary = {
        "contract_year": year,
        "enrolled": len(ordered),
        "targeted_by_drug_management_program": sum(b.basis == "drug-management-program" for b in ordered),
        "opted_out": dict(sorted(opt_outs.items())),
        "offered_cmr": sum(bool(b.cmr_offers) for b in ordered),
        "received_cmr": sum(bool(b.cmrs) for b in ordered),
        "tmrs": sum(b.tmrs for b in ordered),
        "prescriber_recommendations": sum(b.prescriber_recommendations for b in ordered),
        "therapy_changes": sum(b.therapy_changes for b in ordered),
        "cmr_completion_rate": {
            "numerator": len(completed),
            "denominator": len(eligible),
            "rate": round(len(completed) / len(eligible), 4) if eligible else None,
        },
    }
    return CmsReport(year=year, rows=[b.row() for b in ordered], summary=summary)


def _day(value: date | None) -> str:
    return value.isoformat() if value else ""


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
