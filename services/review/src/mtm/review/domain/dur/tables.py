"""Which knowledge-base table becomes which rule: one declaration per CSV table, read by one generic loader.

Every rule's rule_id, severity, tier, message and source are the columns of the same names in its table's
row; the declarations below only say how the other columns become the rule's fields and how rules are
indexed. To find where an alert comes from, open the table named here and search for its rule_id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mtm.review.domain.dur.model import normalize_hla_result, normalize_phenotype
from mtm.review.domain.dur.rules import (
    AllergyRule,
    CombinationRule,
    ConditionRule,
    CriteriaRule,
    Criterion,
    DoseLimit,
    DoseSchedule,
    DuplicationRule,
    GeriatricRule,
    InteractionRule,
    PharmacogenomicRule,
    RenalRule,
    Rule,
)

Row = Mapping[str, str]


class KnowledgeBaseError(ValueError):
    """A rule table is malformed: the message names the table and the rule."""


class Names(Protocol):
    """What column readers need from the loader: names mapped to the knowledge base's ingredients and classes."""

    def canonical(self, name: str) -> str: ...

    def known_class(self, name: str) -> str: ...

    def expand(self, token: str) -> frozenset[str]: ...

    def members(self, tables: tuple[str, ...], key: str, role: str) -> frozenset[str]: ...


Read = Callable[[Names, Row], object]
Side = Callable[[Names, Row], frozenset[str]]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: its rule type, how its own columns fill the rule's fields, and where the rules go.

    * `expand`: column naming an ingredient or `class:<name>`; one rule per member, in the field `ingredient`
      (an empty cell gives one rule with ingredient None when `optional_drug`).
    * `sides`: for interaction tables, the two drug sets whose every cross pair the rule covers.
    * `into`: the KnowledgeBase field the rules feed; `index`: the rule field they are looked up by.
    """

    table: str
    rule: type[Rule]
    into: str
    fields: Mapping[str, Read] = field(default_factory=dict)
    expand: str | None = None
    optional_drug: bool = False
    sides: tuple[Side, Side] | None = None
    index: str | None = None


# --- column readers -----------------------------------------------------------------------------------------


def _cell(row: Row, column: str) -> str:
    return (row.get(column) or "").strip()


def text(column: str) -> Read:
    return lambda _names, row: _cell(row, column)


def lowered(column: str, default: str | None = None) -> Read:
    return lambda _names, row: _cell(row, column).lower() or default


def choice(column: str, allowed: tuple[str, ...], default: str | None = None) -> Read:
    def read(_names: Names, row: Row) -> str:
        value = _cell(row, column).lower() or default
        if value not in allowed:
            raise KnowledgeBaseError(f"column {column!r} is {value!r}, not one of {allowed}")
        return value

    return read


def number(column: str, default: float | None = None) -> Read:
    def read(_names: Names, row: Row) -> float:
        value = _cell(row, column)
        if not value and default is None:
            raise KnowledgeBaseError(f"column {column!r} is empty")
        return float(value) if value else float(default or 0)

    return read


def optional_number(column: str) -> Read:
    return lambda _names, row: float(value) if (value := _cell(row, column)) else None


def integer(column: str) -> Read:
    return lambda _names, row: int(value) if (value := _cell(row, column)) else None


def flag(column: str) -> Read:
    return lambda _names, row: _cell(row, column).lower() == "true"


def items(column: str, transform: Callable[[str], str] = str) -> Read:
    """A `;`-separated list."""
    return lambda _names, row: tuple(transform(part.strip()) for part in _cell(row, column).split(";") if part.strip())


def class_name(column: str) -> Read:
    return lambda names, row: names.known_class(_cell(row, column))


def class_names(column: str) -> Read:
    return lambda names, row: tuple(names.known_class(part.strip()) for part in _cell(row, column).split(";"))


def ingredient(column: str) -> Read:
    return lambda names, row: names.canonical(_cell(row, column))


def constant(value: object) -> Read:
    return lambda _names, _row: value


def phenotype(gene_column: str, column: str) -> Read:
    """An HLA allele's result is positive/negative; a gene's phenotype is normalized text."""

    def read(_names: Names, row: Row) -> str:
        value = _cell(row, column)
        return normalize_hla_result(value) if "*" in _cell(row, gene_column) else normalize_phenotype(value)

    return read


_CRITERION = re.compile(r"^\s*([a-z_]+)\s*(>=|<=|>|<)\s*([0-9.]+)\s*$")
_FACTS = frozenset({"age_years", "weight_kg", "serum_creatinine_mg_dl"})


def criteria(column: str) -> Read:
    """`age_years>=80;weight_kg<=60` to Criterion values."""

    def read(_names: Names, row: Row) -> tuple[Criterion, ...]:
        parsed = []
        for part in _cell(row, column).split(";"):
            match = _CRITERION.match(part)
            if not match or match.group(1) not in _FACTS:
                raise KnowledgeBaseError(f"criterion {part!r} is not `<fact><op><number>` with a fact in {_FACTS}")
            parsed.append(Criterion(match.group(1), match.group(2), float(match.group(3))))  # type: ignore[arg-type]
        return tuple(parsed)

    return read


def drugs(column: str) -> Side:
    return lambda names, row: names.expand(_cell(row, column))


def members(tables: tuple[str, ...], role: str) -> Side:
    """The drugs a member table lists for this row's pair number and role (ONC lists)."""
    return lambda names, row: names.members(tables, _cell(row, "pair_no"), role)


# --- the tables ---------------------------------------------------------------------------------------------

ONC_HIGH_MEMBERS = ("onc_high_priority_members",)
ONC_NONINTERRUPTIVE_MEMBERS = ("onc_noninterruptive_members", "onc_noninterruptive_added_members")


def interactions(table: str, precedence: int, origin: str, sides: tuple[Side, Side]) -> TableSpec:
    """A drug-pair table; `origin` names the list in "also listed by" notes."""
    return TableSpec(
        table,
        InteractionRule,
        "interactions",
        {"precedence": constant(precedence), "origin": constant(origin)},
        sides=sides,
    )


def pharmacogenomic(table: str) -> TableSpec:
    fields: dict[str, Read] = {
        "gene": lambda _names, row: _cell(row, "gene").upper(),
        "phenotype": phenotype("gene", "phenotype"),
    }
    return TableSpec(table, PharmacogenomicRule, "pgx", fields, expand="drug", index="ingredient")


TABLES: tuple[TableSpec, ...] = (
    # Interactions: when several tables cover a pair, the lowest precedence wins, then the higher severity.
    interactions("interactions_curated", 0, "mtm curated table", (drugs("a"), drugs("b"))),
    interactions(
        "onc_high_priority_pairs",
        0,
        "ONC high-priority list",
        (members(ONC_HIGH_MEMBERS, "object"), members(ONC_HIGH_MEMBERS, "precipitant")),
    ),
    interactions(
        "onc_noninterruptive_pairs",
        1,
        "ONC non-interruptive list",
        (members(ONC_NONINTERRUPTIVE_MEMBERS, "object"), members(ONC_NONINTERRUPTIVE_MEMBERS, "precipitant")),
    ),
    interactions("ndfrt_va_ddi_pairs", 2, "VA NDF-RT", (drugs("drug1_name"), drugs("drug2_name"))),
    TableSpec(
        "duplication",
        DuplicationRule,
        "duplication",
        {"class_a": class_name("class_a"), "class_b": class_name("class_b"), "same_route": flag("same_route")},
    ),
    TableSpec(
        "combinations",
        CombinationRule,
        "combinations",
        {
            "kind": lowered("kind", "interaction"),
            "classes": class_names("classes"),
            "min_count": integer("min_count"),
            "min_age": integer("min_age"),
            "sex": lowered("sex"),
            "routes": items("route", str.lower),
        },
    ),
    TableSpec(
        "dose_limits",
        DoseLimit,
        "dose_limits",
        {"route": lowered("route", "*"), "max_daily": number("max_daily"), "unit": lowered("unit")},
        expand="ingredient",
        index="ingredient",
    ),
    TableSpec(
        "dose_schedule",
        DoseSchedule,
        "dose_schedules",
        {
            "route": lowered("route", "*"),
            "min_single_dose": number("min_single_dose", default=0),
            "unit": lowered("unit"),
            "max_frequency_per_day": number("max_frequency_per_day"),
        },
        expand="ingredient",
        index="ingredient",
    ),
    TableSpec(
        "dose_criteria",
        CriteriaRule,
        "dose_criteria",
        {
            "criteria": criteria("criteria"),
            "min_met": integer("min_met"),
            "max_met": integer("max_met"),
            "min_daily": optional_number("min_daily"),
            "max_daily": optional_number("max_daily"),
            "unit": lowered("unit"),
        },
        expand="drug",
        index="ingredient",
    ),
    TableSpec(
        "renal",
        RenalRule,
        "renal",
        {
            "measure": choice("measure", ("crcl", "egfr")),
            "weight": choice("weight", ("actual", "adjusted"), default="actual"),
            "min_value": optional_number("min_value"),
            "max_value": optional_number("max_value"),
            "max_daily": optional_number("max_daily"),
            "unit": lowered("unit"),
        },
        expand="drug",
        index="ingredient",
    ),
    TableSpec(
        "conditions",
        ConditionRule,
        "conditions",
        {
            "condition": text("condition"),
            "icd10_prefixes": items("icd10_prefixes", str.upper),
            "snomed_codes": lambda names, row: frozenset(items("snomed_codes")(names, row)),  # type: ignore[arg-type]
            "keywords": items("keywords", str.lower),
            "include_resolved": flag("include_resolved"),
            "route": lowered("route"),
        },
        expand="drug",
        index="ingredient",
    ),
    TableSpec(
        "allergy_rules",
        AllergyRule,
        "allergy_rules",
        {"allergen_class": class_name("allergen_class"), "drug_class": class_name("drug_class")},
        index="allergen_class",
    ),
    TableSpec(
        "geriatric",
        GeriatricRule,
        "geriatric",
        {
            "min_age": integer("min_age"),
            "max_daily": optional_number("max_daily"),
            "unit": lowered("unit"),
            "text_contains": lowered("text_contains"),
        },
        expand="drug",
        optional_drug=True,
        index="ingredient",
    ),
    pharmacogenomic("pgx_cpic"),
    pharmacogenomic("pgx_curated"),
)
