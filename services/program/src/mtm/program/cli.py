"""What the program gives the `mtm` command (entry points, no stack needed): `mtm eligibility`, `mtm adherence`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

Render = Callable[[Path], dict[str, Any]]


def _read_member(path: Path):
    from mtm.fhir.member import parse_member_bundle
    from mtm.fhir.validation import read_json_file

    return parse_member_bundle(read_json_file(path))


def _as_of(latest: date | None) -> date:
    if latest is None:
        raise ValueError(
            "Bundle: entry: no dated record (fill, claim, order, condition, encounter) to take a year from"
        )
    return latest


def eligibility() -> Render:
    """CMS Part D MTM targeting of FHIR R4 member bundles, one JSON line per file"""
    from mtm.program.domain.targeting import determine
    from mtm.program.member import targeting_input
    from mtm.program.tables import targeting_tables

    tables = targeting_tables()

    def render(path: Path) -> dict[str, Any]:
        record = _read_member(path)
        result = determine(targeting_input(record), as_of=_as_of(record.latest), tables=tables)
        return {
            "patient": record.patient_id,
            "eligible": result.eligible,
            "basis": result.basis,
            "criteria": {
                **result.criteria.model_dump(mode="json"),
                **result.findings.model_dump(mode="json"),
                "as_of": result.determined_on.isoformat(),
            },
            "reasons": list(result.reasons),
        }

    return render


def adherence(year: int | None = None) -> Render:
    """PDC adherence per drug class (statins, RAS antagonists, non-insulin diabetes drugs) from the fills of FHIR
    R4 member bundles, one JSON line per file"""
    from mtm.program.domain.adherence import measure
    from mtm.program.domain.targeting import chronic_diseases
    from mtm.program.member import adherence_fills, targeting_input
    from mtm.program.tables import adherence_tables, targeting_tables

    tables = adherence_tables()

    def render(path: Path) -> dict[str, Any]:
        record = _read_member(path)
        fills = adherence_fills(record)
        measured_year = year or _as_of(max((f.filled_on for f in fills), default=None) or record.latest).year
        diseases = chronic_diseases(targeting_input(record).conditions, targeting_tables())
        # A file is a year's extract: the whole calendar year is the measurement period.
        as_of = date(measured_year, 12, 31)
        result = measure(fills, year=measured_year, as_of=as_of, tables=tables, diseases=diseases)
        return {
            "patient": record.patient_id,
            "year": measured_year,
            "pdc": {c.drug_class: c.pdc for c in result.classes if c.pdc is not None},
            "below_threshold": list(result.below_threshold),
            "measures": [c.model_dump(mode="json") for c in result.classes],
        }

    return render


adherence.options = (  # type: ignore[attr-defined]
    ("--year", {"type": int, "help": "measurement year (default: the year of the latest fill)"}),
)
for _command in (eligibility, adherence):
    _command.reads = "path"  # type: ignore[attr-defined]
