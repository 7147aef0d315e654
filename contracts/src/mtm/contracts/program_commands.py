"""Commands and queries of the MTM program: disenrolment, a member's program status, the program's reports."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from mtm.contracts.commands import Command, Query
from mtm.contracts.limits import FhirId
from mtm.contracts.program import DisenrolmentReason


class DisenrollMember(Command):
    """A pharmacist (or an administrator) records that an enrolled member left the program this year."""

    patient_id: FhirId
    program_year: int = Field(ge=2000, le=2100)
    reason: DisenrolmentReason
    effective: date | None = Field(default=None, description="When it took effect; the day it is recorded if absent.")
    note: str | None = Field(default=None, max_length=500)


class GetProgramStatus(Query):
    """One patient's eligibility, enrolments and adherence as the program holds them."""

    patient_id: FhirId


class GetCmsReport(Query):
    """The beneficiary-level MTM file for one contract year, with the CMR completion rate and a summary."""

    year: int = Field(ge=2000, le=2100)


class GetAlertReport(Query):
    """Alert burden and acceptance per drug-check rule."""

    since: date | None = None
