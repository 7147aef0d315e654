"""Settings of the program service: the plan's targeting choices and how often due members are evaluated."""

from __future__ import annotations

from pydantic import Field

from mtm.platform.settings import ServiceSettings


class ProgramSettings(ServiceSettings):
    service: str = "program"
    program_min_chronic_diseases: int = Field(default=3, ge=2, le=3, description="N (MTM_PROGRAM_MIN_…_DISEASES)")
    program_min_maintenance_drugs: int = Field(
        default=8, ge=2, le=8, description="M (MTM_PROGRAM_MIN_MAINTENANCE_DRUGS)"
    )
    program_cost_per_drug: float | None = Field(
        default=None, gt=0, description="The plan's annual cost estimate per maintenance drug; threshold / 8 if unset."
    )
    program_evaluation_every_s: float = Field(
        default=5.0, gt=0, description="How often the timer looks for members with new inputs or a quarterly review."
    )
