"""Figures with their counts, the table `make faults` prints, and `faults/results/latest.json`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One measured figure: `value` out of `count` (what it was measured on), and whether its requirement held.

    Counts (lost, doubled, parked…) have a requirement; timings are reported with theirs but the tests never
    assert them.
    """

    key: str
    label: str
    value: float
    count: float | None = None
    of: str = ""
    unit: str = ""
    requirement: str = ""
    held: bool | None = None
    timing: bool = False
    """A duration: reported against its requirement, never asserted by the tests (the machine is shared)."""


def must_be_zero(key: str, label: str, value: int, count: int | None, of: str) -> Figure:
    return Figure(key, label, value, count, of, requirement="= 0", held=value == 0)


def within(key: str, label: str, seconds: float, bound: float, *, count: float | None = None, of: str = "") -> Figure:
    """A duration against its requirement (held or not, in the table; never asserted in tests)."""
    return Figure(key, label, seconds, count, of, "s", f"≤ {bound:g} s", held=seconds <= bound, timing=True)


def reported(key: str, label: str, value: float, *, count: float | None = None, of: str = "", unit: str = "") -> Figure:
    return Figure(key, label, value, count, of, unit)


@dataclass
class Result:
    scenario: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    failure: str | None = None
    work_dir: str = ""

    def add(self, *figures: Figure) -> None:
        self.figures.extend(figures)

    @property
    def held(self) -> bool:
        return self.failure is None and all(f.held is not False for f in self.figures)

    def figure(self, key: str) -> Figure:
        return next(f for f in self.figures if f.key == key)

    def broken_counts(self) -> list[Figure]:
        """Count figures whose requirement did not hold (what the tests assert; timings are left out)."""
        return [f for f in self.figures if f.held is False and not f.timing]


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def table(results: Iterable[Result]) -> str:
    """One row per figure: the value, what it was counted on, the requirement and whether it held."""
    rows = [("", "figure", "value", "of", "requirement", "")]
    for result in results:
        verdict = "held" if result.held else "NOT HELD"
        rows.append((result.scenario, f"{result.title} ({result.seconds:,.0f} s): {verdict}", "", "", "", ""))
        if result.failure:
            rows.append(("", f"failed: {result.failure}", "", "", "", ""))
        for figure in result.figures:
            of = f"{_number(figure.count)} {figure.of}".strip() if figure.count is not None else figure.of
            mark = {True: "ok", False: "FAIL", None: ""}[figure.held]
            value = f"{_number(figure.value)} {figure.unit}".strip()
            rows.append(("", figure.label, value, of, figure.requirement, mark))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    aligned: list[Callable[[str, int], str]] = [str.ljust, str.ljust, str.rjust, str.ljust, str.ljust, str.ljust]
    return "\n".join(
        "  ".join(align(cell, width) for align, cell, width in zip(aligned, row, widths, strict=True)).rstrip()
        for row in rows
    )


def write_json(results: Iterable[Result], path: Path, **run: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**run, "scenarios": {r.scenario: asdict(r) | {"held": r.held} for r in results}}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
