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
    SAME_INGREDIENT,
    AllergyRule,
    CodeSet,
    CombinationRule,
    ConditionRule,
    CriteriaRule,
    Criterion,
    DoseLimit,
    DoseSchedule,
    DrugOmissionRule,
    DuplicationRule,
    GeriatricRule,
    InteractionRule,
    OmissionRule,
    PairDoseLimit,
    PharmacogenomicRule,
    PlausibilityRule,
    RenalInteractionRule,
    RenalRule,
    Rule,
)

Row = Mapping[str, str]


class KnowledgeBaseError(ValueError):
    """A rule table is malformed: the message names the table and the rule."""


class Names(Protocol):
    """What column readers need from the loader: names mapped to the knowledge base's ingredients, classes,
    mechanism roles and condition value sets."""

    def canonical(self, name: str) -> str: ...

    def known_class(self, name: str) -> str: ...

    def expand(self, token: str) -> frozenset[str]: ...

    def members(self, tables: tuple[str, ...], key: str, role: str) -> frozenset[str]: ...

    def value_set(self, name: str) -> CodeSet: ...


Read = Callable[[Names, Row], object]
Side = Callable[[Names, Row], frozenset[str]]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One table: its rule type, how its own columns fill the rule's fields, and where the rules go.

    * `expand`: column naming an ingredient or `class:<name>`; one rule per member, in the field `ingredient`
      (an empty cell gives one rule with ingredient None when `optional_drug`).
    * `sides`: for interaction tables, the two drug sets whose every cross pair the rule covers.
    * `into`: the KnowledgeBase field the rules feed; `index`: the rule field they are looked up by.
    * `broad_columns`: for interaction tables, columns whose `class:` or `role:` token makes the row one rank less
      precise than a row naming both drugs (precedence + 1), so an explicit pair row overrides it.
    * `cited`: rows cite an FDA label instead of a free-text `source`: `label_set_id` (a set id in
      `labels.csv`), `section` (one of LABEL_SECTIONS) and a verbatim `quote`; the loader writes the source
      from them and rejects a row missing any of the three.
    """

    table: str
    rule: type[Rule]
    into: str
    fields: Mapping[str, Read] = field(default_factory=dict)
    expand: str | None = None
    optional_drug: bool = False
    sides: tuple[Side, Side] | None = None
    index: str | None = None
    cited: bool = False
    broad_columns: tuple[str, ...] = ()


LABEL_SECTIONS: Mapping[str, str] = {
    # openFDA drug/label field names (as the staged label files name them) and the SPL section they hold.
    "boxed_warning": "Boxed Warning",
    "contraindications": "Contraindications",
    "warnings_and_cautions": "Warnings and Precautions",
    "warnings": "Warnings",
    "precautions": "Precautions",
    "drug_interactions": "Drug Interactions",
    "dosage_and_administration": "Dosage and Administration",
    "use_in_specific_populations": "Use in Specific Populations",
    "pregnancy": "Pregnancy",
    "nursing_mothers": "Nursing Mothers",
    "lactation": "Lactation",
    "pediatric_use": "Pediatric Use",
    "geriatric_use": "Geriatric Use",
    "overdosage": "Overdosage",
}
"""Label sections a cited row may name."""


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


INGREDIENT_ALLERGEN = "ingredient:"
"""An allergen given as one ingredient (`ingredient:citalopram`), for a label naming a single related drug."""


def allergen(column: str) -> Read:
    def read(names: Names, row: Row) -> str:
        value = _cell(row, column)
        if value.lower().startswith(INGREDIENT_ALLERGEN):
            return INGREDIENT_ALLERGEN + names.canonical(value[len(INGREDIENT_ALLERGEN) :])
        return names.known_class(value)

    return read


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


def drug_set(column: str) -> Read:
    """The drugs a token names (ingredient, `class:`, `role:`, `;` for any of several), as a frozenset."""
    return lambda names, row: names.expand(_cell(row, column))


def codes(value_sets: str, inline: bool = True) -> Callable[[Names, Row], CodeSet]:
    """A condition's codes: the named value sets (`;`-separated) plus, when `inline`, the row's own
    icd10_prefixes, snomed_codes and keywords columns."""

    def read(names: Names, row: Row) -> CodeSet:
        merged = CodeSet()
        if inline:
            merged = CodeSet(
                tuple(part.strip().upper() for part in _cell(row, "icd10_prefixes").split(";") if part.strip()),
                frozenset(part.strip() for part in _cell(row, "snomed_codes").split(";") if part.strip()),
                tuple(part.strip().lower() for part in _cell(row, "keywords").split(";") if part.strip()),
            )
        for name in _cell(row, value_sets).split(";"):
            if name.strip():
                merged = merged | names.value_set(name.strip())
        return merged

    return read


def code_part(value_sets: str, attribute: str) -> Read:
    read = codes(value_sets)
    return lambda names, row: getattr(read(names, row), attribute)


def members(tables: tuple[str, ...], role: str) -> Side:
    """The drugs a member table lists for this row's pair number and role (ONC lists)."""
    return lambda names, row: names.members(tables, _cell(row, "pair_no"), role)


# --- the tables ---------------------------------------------------------------------------------------------

ONC_HIGH_MEMBERS = ("onc_high_priority_members",)
ONC_NONINTERRUPTIVE_MEMBERS = ("onc_noninterruptive_members", "onc_noninterruptive_added_members")


def interactions(
    table: str,
    precedence: int,
    origin: str,
    sides: tuple[Side, Side],
    cited: bool = False,
    broad_columns: tuple[str, ...] = (),
) -> TableSpec:
    """A drug-pair table; `origin` names the list in "also listed by" notes."""
    return TableSpec(
        table,
        InteractionRule,
        "interactions",
        {"precedence": constant(precedence), "origin": constant(origin)},
        sides=sides,
        cited=cited,
        broad_columns=broad_columns,
    )


def condition_rules(table: str, cited: bool = False) -> TableSpec:
    """Drug-condition and drug-population rules; conditions come from value sets and/or inline codes."""
    fields: dict[str, Read] = {
        "condition": text("condition"),
        "icd10_prefixes": code_part("value_set", "icd10_prefixes"),
        "snomed_codes": code_part("value_set", "snomed_codes"),
        "keywords": code_part("value_set", "keywords"),
        "answers": code_part("value_set", "answers"),
        "include_resolved": flag("include_resolved"),
        "route": lowered("route"),
        "min_age": integer("min_age"),
        "max_age": integer("max_age"),
        "sex": lowered("sex"),
        "max_daily": optional_number("max_daily"),
        "unit": lowered("unit"),
        "unless": codes("unless_value_set", inline=False),
    }
    return TableSpec(table, ConditionRule, "conditions", fields, expand="drug", index="ingredient", cited=cited)


KIDNEY_RANGE: Mapping[str, Read] = {
    "measure": choice("measure", ("crcl", "egfr")),
    "weight": choice("weight", ("actual", "adjusted"), default="actual"),
    "min_value": optional_number("min_value"),
    "max_value": optional_number("max_value"),
}
"""The kidney-function columns renal rules and renal-conditioned interactions share."""


def renal_rules(table: str, cited: bool = False) -> TableSpec:
    fields: dict[str, Read] = {
        **KIDNEY_RANGE,
        "max_daily": optional_number("max_daily"),
        "unit": lowered("unit"),
        "route": lowered("route"),
    }
    return TableSpec(table, RenalRule, "renal", fields, expand="drug", index="ingredient", cited=cited)


def dose_limits(table: str, cited: bool = False) -> TableSpec:
    fields: dict[str, Read] = {
        "route": lowered("route", "*"),
        "max_daily": number("max_daily"),
        "unit": lowered("unit"),
    }
    return TableSpec(table, DoseLimit, "dose_limits", fields, expand="ingredient", index="ingredient", cited=cited)


def pair_dose_limits(table: str, cited: bool = False) -> TableSpec:
    fields: dict[str, Read] = {
        "partners": drug_set("partner"),
        "max_daily": number("max_daily"),
        "unit": lowered("unit"),
        "route": lowered("route"),
    }
    return TableSpec(table, PairDoseLimit, "pair_dose_limits", fields, expand="drug", index="ingredient", cited=cited)


def pharmacogenomic(table: str, cited: bool = False) -> TableSpec:
    fields: dict[str, Read] = {
        "gene": lambda _names, row: _cell(row, "gene").upper(),
        "phenotype": phenotype("gene", "phenotype"),
    }
    return TableSpec(table, PharmacogenomicRule, "pgx", fields, expand="drug", index="ingredient", cited=cited)


TABLES: tuple[TableSpec, ...] = (
    # Interactions: when several tables cover a pair, the lowest precedence wins, then the higher severity, then
    # a label-cited row. Rows naming both drugs (curated, ONC high-priority, a label) come first; a curated or
    # label row for a class or mechanism role (a strong CYP3A4 inhibitor, a QT-prolonging drug) next (+1, see
    # broad_columns); then the third-party lists.
    interactions("interactions_curated", 0, "mtm curated table", (drugs("a"), drugs("b")), broad_columns=("a", "b")),
    interactions(
        "onc_high_priority_pairs",
        0,
        "ONC high-priority list",
        (members(ONC_HIGH_MEMBERS, "object"), members(ONC_HIGH_MEMBERS, "precipitant")),
    ),
    interactions("label_interactions", 0, "FDA label", (drugs("a"), drugs("b")), cited=True, broad_columns=("a", "b")),
    interactions(
        "onc_noninterruptive_pairs",
        2,
        "ONC non-interruptive list",
        (members(ONC_NONINTERRUPTIVE_MEMBERS, "object"), members(ONC_NONINTERRUPTIVE_MEMBERS, "precipitant")),
    ),
    interactions("ndfrt_va_ddi_pairs", 3, "VA NDF-RT", (drugs("drug1_name"), drugs("drug2_name"))),
    TableSpec(
        "duplication",
        DuplicationRule,
        "duplication",
        {"class_a": class_name("class_a"), "class_b": class_name("class_b"), "same_route": flag("same_route")},
    ),
    # One agent at a time: a duplication rule per class, derived from the class table's membership.
    TableSpec(
        "class_duplication",
        DuplicationRule,
        "duplication",
        {
            "class_a": class_name("class"),
            "class_b": class_name("class"),
            "same_route": flag("same_route"),
            "except_across": lambda names, row: tuple(
                names.known_class(part.strip()) for part in _cell(row, "except_across").split(";") if part.strip()
            ),
        },
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
    dose_limits("dose_limits"),
    dose_limits("label_dose_limits", cited=True),
    pair_dose_limits("label_pair_dose_limits", cited=True),
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
        "dose_plausibility",
        PlausibilityRule,
        "plausibility",
        {
            "check": choice("check", ("ratio_to_max", "unit_slip", "units_per_dose")),
            "threshold": number("threshold"),
            "window": optional_number("window"),
        },
    ),
    renal_rules("renal"),
    renal_rules("label_renal", cited=True),
    condition_rules("conditions"),
    condition_rules("label_conditions", cited=True),
    TableSpec(
        "omissions",
        OmissionRule,
        "omissions",
        {
            "condition": text("condition"),
            "codes": codes("value_set", inline=False),
            "include_resolved": flag("include_resolved"),
            "therapy": text("therapy"),
            "therapy_ingredients": drug_set("therapy_drugs"),
            "unless": codes("unless_value_set", inline=False),
            "min_age": integer("min_age"),
            "max_age": integer("max_age"),
        },
    ),
    # Omissions triggered by a drug on the list rather than a condition (folic acid with methotrexate).
    TableSpec(
        "drug_omissions",
        DrugOmissionRule,
        "drug_omissions",
        {
            "trigger": text("trigger"),
            "trigger_ingredients": drug_set("trigger_drugs"),
            "routes": items("routes", str.lower),
            "regular_only": flag("regular_only"),
            "therapy": text("therapy"),
            "therapy_ingredients": drug_set("therapy_drugs"),
            "unless": codes("unless_value_set", inline=False),
            "min_age": integer("min_age"),
            "max_age": integer("max_age"),
        },
    ),
    # A label's interaction that holds only within a range of kidney function, keyed on the drug whose label says so.
    TableSpec(
        "label_renal_interactions",
        RenalInteractionRule,
        "renal_interactions",
        {**KIDNEY_RANGE, "partners": drug_set("b")},
        expand="a",
        index="ingredient",
        cited=True,
    ),
    TableSpec(
        "allergy_rules",
        AllergyRule,
        "allergy_rules",
        {"allergen_class": class_name("allergen_class"), "drug_class": class_name("drug_class")},
        index="allergen_class",
    ),
    # A label's own hypersensitivity contraindication: the drug itself (`same_ingredient`) or a named class.
    TableSpec(
        "label_allergies",
        AllergyRule,
        "allergy_rules",
        {"allergen_class": allergen("allergen_class"), "drug_class": constant(SAME_INGREDIENT)},
        expand="drug",
        index="allergen_class",
        cited=True,
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
    # A label's own genetic risk factor where CPIC has no guideline (lamotrigine and HLA-B*15:02).
    pharmacogenomic("label_pgx", cited=True),
)
