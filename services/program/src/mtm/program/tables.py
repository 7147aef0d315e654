"""The program's data files (thresholds per year, disease codes, adherence classes), read once per process."""

from __future__ import annotations

import csv
from functools import cache
from importlib.resources import files
from typing import Any

from mtm.program.domain.adherence import AdherenceTables, Exclusion
from mtm.program.domain.targeting import DiseaseCode, ProgramYear, TargetingTables


def _rows(name: str) -> list[dict[str, Any]]:
    with (files("mtm.program") / "data" / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@cache
def targeting_tables() -> TargetingTables:
    years = [
        ProgramYear(
            year=int(r["program_year"]),
            annual_cost_threshold=float(r["annual_cost_threshold"]),
            max_chronic_diseases=int(r["max_chronic_diseases"]),
            max_maintenance_drugs=int(r["max_maintenance_drugs"]),
        )
        for r in _rows("program_years.csv")
    ]
    codes = [
        DiseaseCode(system=r["system"], code=r["code"], prefix=r["match"] == "prefix", category=r["category"])
        for r in _rows("chronic_diseases.csv")
    ]
    return TargetingTables.of(years, codes)


@cache
def adherence_tables() -> AdherenceTables:
    members = {r["ingredient"]: r["drug_class"] for r in _rows("pdc_classes.csv")}
    exclusions = [
        Exclusion(drug_class=r["drug_class"], kind=r["kind"], value=r["value"], reason=r["reason"])
        for r in _rows("pdc_exclusions.csv")
    ]
    return AdherenceTables(members=members, exclusions=tuple(exclusions))
