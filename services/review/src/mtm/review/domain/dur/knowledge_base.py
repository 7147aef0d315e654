"""The DUR knowledge base: rule tables expanded through drug classes and indexed by ingredient for fast checks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar, cast

from mtm.review.domain.dur.model import normalize_hla_result, normalize_phenotype
from mtm.review.domain.dur.rules import (
    SAME_INGREDIENT,
    SEVERITY_RANK,
    AllergyRule,
    ConditionRule,
    DoseLimit,
    DoseSchedule,
    DuplicationRule,
    GeriatricRule,
    InteractionRule,
    PharmacogenomicRule,
    RenalRule,
    Severity,
    Tier,
)

Row = Mapping[str, str]
PairKey = frozenset[str]

CLASS_PREFIX = "class:"
ONC_HIGH_SOURCE = "ONC high-priority DDI list (Phansalkar S et al. J Am Med Inform Assoc 2012;19:735-743)"
ONC_NONINTERRUPTIVE_SOURCE = "ONC non-interruptive DDI list (Phansalkar S et al. J Am Med Inform Assoc 2013;20:489-493)"
VA_SOURCE = "VA NDF-RT drug interaction (U.S. Department of Veterans Affairs, public domain)"
VA_SEVERITY: dict[str, tuple[Severity, Tier]] = {
    "critical": ("high", "interruptive"),
    "significant": ("moderate", "passive"),
}
ONC_QT_PAIR = "8"


class KnowledgeBaseError(ValueError):
    """A rule table is malformed: the message names the table and the rule."""


@dataclass(frozen=True, slots=True)
class KnowledgeTables:
    """Raw rows of every knowledge-base table, as read from the CSV files of the same names."""

    version: str = "unversioned"
    aliases: Sequence[Row] = ()
    classes: Sequence[Row] = ()
    interactions_curated: Sequence[Row] = ()
    onc_high_priority_pairs: Sequence[Row] = ()
    onc_high_priority_members: Sequence[Row] = ()
    onc_noninterruptive_pairs: Sequence[Row] = ()
    onc_noninterruptive_members: Sequence[Row] = ()
    onc_noninterruptive_added_members: Sequence[Row] = ()
    ndfrt_va_ddi_pairs: Sequence[Row] = ()
    duplication: Sequence[Row] = ()
    dose_limits: Sequence[Row] = ()
    dose_schedule: Sequence[Row] = ()
    renal: Sequence[Row] = ()
    conditions: Sequence[Row] = ()
    allergy_keywords: Sequence[Row] = ()
    allergy_rules: Sequence[Row] = ()
    geriatric: Sequence[Row] = ()
    pgx_cpic: Sequence[Row] = ()
    pgx_curated: Sequence[Row] = ()


K = TypeVar("K")
V = TypeVar("V")
AddPairs = Callable[[Iterable[str], Iterable[str], InteractionRule], int]


def _frozen_index(index: Mapping[K, list[V]]) -> Mapping[K, tuple[V, ...]]:
    return MappingProxyType({key: tuple(values) for key, values in index.items()})


def _optional_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _severity(row: Row, table: str) -> tuple[Severity, Tier]:
    severity, tier = row.get("severity", ""), row.get("tier", "")
    if severity not in SEVERITY_RANK or tier not in ("interruptive", "passive"):
        raise KnowledgeBaseError(f"{table}: rule {row.get('rule_id')!r} has severity {severity!r}, tier {tier!r}")
    return cast(Severity, severity), cast(Tier, tier)


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """Indexed rules; build with `KnowledgeBase.from_tables` (see mtm.review.knowledge for loading files)."""

    version: str
    aliases: Mapping[str, str]
    class_members: Mapping[str, frozenset[str]]
    classes_of: Mapping[str, frozenset[str]]
    interactions: Mapping[PairKey, InteractionRule]
    interacting: frozenset[str]
    duplication: tuple[DuplicationRule, ...]
    dose_limits: Mapping[str, tuple[DoseLimit, ...]]
    dose_schedules: Mapping[str, tuple[DoseSchedule, ...]]
    renal: Mapping[str, tuple[RenalRule, ...]]
    conditions: Mapping[str, tuple[ConditionRule, ...]]
    allergy_rules: Mapping[str, tuple[AllergyRule, ...]]
    allergy_keywords: Mapping[str, frozenset[str]]
    allergy_snomed: Mapping[str, frozenset[str]]
    allergy_max_words: int
    geriatric: Mapping[str, tuple[GeriatricRule, ...]]
    geriatric_text: tuple[GeriatricRule, ...]
    pgx: Mapping[str, tuple[PharmacogenomicRule, ...]]
    known_ingredients: frozenset[str]
    rule_counts: Mapping[str, int] = field(default_factory=dict)

    def canonical(self, ingredient: str) -> str:
        name = ingredient.strip().lower()
        return self.aliases.get(name, name)

    @classmethod
    def from_tables(cls, tables: KnowledgeTables) -> KnowledgeBase:
        return _Builder(tables).build()


class _Builder:
    def __init__(self, tables: KnowledgeTables) -> None:
        self.tables = tables
        self.aliases = {row["name"].strip().lower(): row["canonical"].strip().lower() for row in tables.aliases}
        members: dict[str, set[str]] = defaultdict(set)
        for row in tables.classes:
            members[row["class"].strip()].add(self.canonical(row["ingredient"]))
        self.class_members = {name: frozenset(drugs) for name, drugs in members.items()}
        classes_of: dict[str, set[str]] = defaultdict(set)
        for name, drugs in self.class_members.items():
            for drug in drugs:
                classes_of[drug].add(name)
        self.classes_of = {drug: frozenset(names) for drug, names in classes_of.items()}
        self.counts: dict[str, int] = {}

    def canonical(self, name: str) -> str:
        cleaned = name.strip().lower().replace("_", " ")
        return self.aliases.get(cleaned, cleaned)

    def expand(self, drug_or_class: str, table: str, rule_id: str) -> frozenset[str]:
        """`class:nsaid` to its members; a plain name to its canonical ingredient."""
        token = drug_or_class.strip()
        if token.lower().startswith(CLASS_PREFIX):
            name = token[len(CLASS_PREFIX) :]
            if name not in self.class_members:
                raise KnowledgeBaseError(f"{table}: rule {rule_id!r} names unknown class {name!r}")
            return self.class_members[name]
        return frozenset({self.canonical(token)})

    def class_or_error(self, name: str, table: str, rule_id: str) -> str:
        if name != SAME_INGREDIENT and name not in self.class_members:
            raise KnowledgeBaseError(f"{table}: rule {rule_id!r} names unknown class {name!r}")
        return name

    def build(self) -> KnowledgeBase:
        interactions = self.interactions()
        pgx = self.pgx()
        known = set(self.classes_of) | set(self.aliases.values())
        for pair in interactions:
            known |= pair
        known |= set(pgx)
        return KnowledgeBase(
            version=self.tables.version,
            aliases=MappingProxyType(self.aliases),
            class_members=MappingProxyType(self.class_members),
            classes_of=MappingProxyType(self.classes_of),
            interactions=MappingProxyType(interactions),
            interacting=frozenset(drug for pair in interactions for drug in pair),
            duplication=self.duplication(),
            dose_limits=self.dose_limits(),
            dose_schedules=self.dose_schedules(),
            renal=self.renal(),
            conditions=self.condition_rules(),
            allergy_rules=self.allergy_rules(),
            allergy_keywords=self.allergy_index("keyword"),
            allergy_snomed=self.allergy_index("snomed"),
            allergy_max_words=max(
                [len(name.split()) for name in known]
                + [len(row["value"].split()) for row in self.tables.allergy_keywords]
                + [1]
            ),
            geriatric=self.geriatric(),
            geriatric_text=tuple(rule for rule in self.geriatric_rules() if rule.ingredient is None),
            pgx=pgx,
            known_ingredients=frozenset(known),
            rule_counts=MappingProxyType(dict(self.counts)),
        )

    # --- interactions -----------------------------------------------------------------------------------------

    def interactions(self) -> dict[PairKey, InteractionRule]:
        candidates: dict[PairKey, list[InteractionRule]] = defaultdict(list)

        def add(side_a: Iterable[str], side_b: Iterable[str], rule: InteractionRule) -> int:
            added = 0
            for a in side_a:
                for b in side_b:
                    if a != b:
                        candidates[frozenset((a, b))].append(rule)
                        added += 1
            return added

        count = 0
        for row in self.tables.interactions_curated:
            severity, tier = _severity(row, "interactions_curated")
            rule = InteractionRule(
                row["rule_id"], severity, tier, row["message"], row["source"], precedence=0, origin="curated"
            )
            table = "interactions_curated"
            count += add(self.expand(row["a"], table, rule.rule_id), self.expand(row["b"], table, rule.rule_id), rule)
        self.counts["interaction.curated"] = count
        self.counts["interaction.onc_high"] = self.onc_pairs(
            self.tables.onc_high_priority_pairs, self.tables.onc_high_priority_members, (), add, high=True
        )
        self.counts["interaction.onc_noninterruptive"] = self.onc_pairs(
            self.tables.onc_noninterruptive_pairs,
            self.tables.onc_noninterruptive_members,
            self.tables.onc_noninterruptive_added_members,
            add,
            high=False,
        )
        count = 0
        for row in self.tables.ndfrt_va_ddi_pairs:
            severity, tier = VA_SEVERITY[row["severity"].strip().lower()]
            classes = " / ".join(part for part in (row.get("drug1_class"), row.get("drug2_class")) if part)
            message = f"VA NDF-RT lists this as a {row['severity']} interaction ({row['ndfrt_label']})" + (
                f"; classes: {classes}." if classes else "."
            )
            advice = " Avoid or adjust and monitor." if severity == "high" else " Monitor and adjust if needed."
            rule = InteractionRule(
                f"va.{row['ndfrt_nui']}",
                severity,
                tier,
                message + advice,
                f"{VA_SOURCE} {row['ndfrt_nui']} ({row['severity']})",
                precedence=2,
                origin=f"VA NDF-RT ({row['severity']})",
            )
            count += add({self.canonical(row["drug1_name"])}, {self.canonical(row["drug2_name"])}, rule)
        self.counts["interaction.va_ndfrt"] = count

        chosen: dict[PairKey, InteractionRule] = {}
        for pair, rules in candidates.items():
            ranked = sorted(rules, key=lambda rule: (rule.precedence, SEVERITY_RANK[rule.severity], rule.rule_id))
            best = ranked[0]
            others = sorted({rule.origin for rule in ranked[1:] if rule.origin != best.origin})
            if others:
                best = InteractionRule(
                    best.rule_id,
                    best.severity,
                    best.tier,
                    best.message,
                    f"{best.source}; also listed by: {', '.join(others)}",
                    best.precedence,
                    best.origin,
                )
            chosen[pair] = best
        return chosen

    def onc_pairs(
        self, pairs: Sequence[Row], members: Sequence[Row], added: Sequence[Row], add: AddPairs, *, high: bool
    ) -> int:
        sides: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"object": set(), "precipitant": set()})
        for row in (*members, *added):
            if row.get("flag", "").strip():
                continue
            sides[row["pair_no"]][row["role"]].add(self.canonical(row["drug"]))
        count = 0
        for row in pairs:
            number = row["pair_no"]
            if high and number == ONC_QT_PAIR:
                continue
            object_class, precipitant_class = row["object_class"], row["precipitant_class"]
            if high:
                rule = InteractionRule(
                    f"onc-high.{number}",
                    "high",
                    "interruptive",
                    f"{row['concern_editorial']}. ONC high-priority interaction ({object_class} + "
                    f"{precipitant_class}): avoid the combination or use only with specific monitoring.",
                    f"{ONC_HIGH_SOURCE}, pair {number}",
                    precedence=0,
                    origin=f"ONC high-priority pair {number}",
                )
            else:
                rule = InteractionRule(
                    f"onc-ni.{number}",
                    "low",
                    "passive",
                    f"{object_class} + {precipitant_class}: an expert panel judged this interaction "
                    "non-interruptive (minor or usually managed); routine monitoring.",
                    f"{ONC_NONINTERRUPTIVE_SOURCE}, pair {number}",
                    precedence=1,
                    origin=f"ONC non-interruptive pair {number}",
                )
            count += add(sides[number]["object"], sides[number]["precipitant"], rule)
        return count

    # --- per-ingredient tables --------------------------------------------------------------------------------

    def duplication(self) -> tuple[DuplicationRule, ...]:
        rules = []
        for row in self.tables.duplication:
            severity, tier = _severity(row, "duplication")
            rules.append(
                DuplicationRule(
                    row["rule_id"],
                    severity,
                    tier,
                    row["message"],
                    row["source"],
                    class_a=self.class_or_error(row["class_a"], "duplication", row["rule_id"]),
                    class_b=self.class_or_error(row["class_b"], "duplication", row["rule_id"]),
                )
            )
        self.counts["duplication"] = len(rules)
        return tuple(rules)

    def dose_limits(self) -> Mapping[str, tuple[DoseLimit, ...]]:
        index: dict[str, list[DoseLimit]] = defaultdict(list)
        for row in self.tables.dose_limits:
            severity, tier = _severity(row, "dose_limits")
            ingredient = self.canonical(row["ingredient"])
            index[ingredient].append(
                DoseLimit(
                    row["rule_id"],
                    severity,
                    tier,
                    row["message"],
                    row["source"],
                    ingredient=ingredient,
                    route=row["route"].strip().lower() or "*",
                    max_daily=float(row["max_daily"]),
                    unit=row["unit"].strip().lower(),
                )
            )
        self.counts["dose.limit"] = sum(len(rules) for rules in index.values())
        return _frozen_index(index)

    def dose_schedules(self) -> Mapping[str, tuple[DoseSchedule, ...]]:
        index: dict[str, list[DoseSchedule]] = defaultdict(list)
        for row in self.tables.dose_schedule:
            severity, tier = _severity(row, "dose_schedule")
            ingredient = self.canonical(row["ingredient"])
            index[ingredient].append(
                DoseSchedule(
                    row["rule_id"],
                    severity,
                    tier,
                    row["message"],
                    row["source"],
                    ingredient=ingredient,
                    route=row["route"].strip().lower() or "*",
                    min_single_dose=float(row["min_single_dose"] or 0),
                    unit=row["unit"].strip().lower(),
                    max_frequency_per_day=float(row["max_frequency_per_day"]),
                )
            )
        self.counts["dose.schedule"] = sum(len(rules) for rules in index.values())
        return _frozen_index(index)

    def renal(self) -> Mapping[str, tuple[RenalRule, ...]]:
        index: dict[str, list[RenalRule]] = defaultdict(list)
        for row in self.tables.renal:
            severity, tier = _severity(row, "renal")
            for ingredient in self.expand(row["drug"], "renal", row["rule_id"]):
                index[ingredient].append(
                    RenalRule(
                        row["rule_id"],
                        severity,
                        tier,
                        row["message"],
                        row["source"],
                        ingredient=ingredient,
                        min_value=_optional_float(row.get("min_value")),
                        max_value=_optional_float(row.get("max_value")),
                        max_daily=_optional_float(row.get("max_daily")),
                        unit=(row.get("unit") or "").strip().lower() or None,
                    )
                )
        self.counts["renal"] = len(self.tables.renal)
        return _frozen_index(index)

    def condition_rules(self) -> Mapping[str, tuple[ConditionRule, ...]]:
        index: dict[str, list[ConditionRule]] = defaultdict(list)

        def split(value: str | None) -> tuple[str, ...]:
            return tuple(part.strip() for part in (value or "").split(";") if part.strip())

        for row in self.tables.conditions:
            severity, tier = _severity(row, "conditions")
            for ingredient in self.expand(row["drug"], "conditions", row["rule_id"]):
                index[ingredient].append(
                    ConditionRule(
                        row["rule_id"],
                        severity,
                        tier,
                        row["message"],
                        row["source"],
                        ingredient=ingredient,
                        condition=row["condition"],
                        icd10_prefixes=tuple(code.upper() for code in split(row.get("icd10_prefixes"))),
                        snomed_codes=frozenset(split(row.get("snomed_codes"))),
                        keywords=tuple(word.lower() for word in split(row.get("keywords"))),
                        include_resolved=row.get("include_resolved", "").strip().lower() == "true",
                    )
                )
        self.counts["condition"] = len(self.tables.conditions)
        return _frozen_index(index)

    def allergy_rules(self) -> Mapping[str, tuple[AllergyRule, ...]]:
        index: dict[str, list[AllergyRule]] = defaultdict(list)
        for row in self.tables.allergy_rules:
            severity, tier = _severity(row, "allergy_rules")
            rule = AllergyRule(
                row["rule_id"],
                severity,
                tier,
                row["message"],
                row["source"],
                allergen_class=self.class_or_error(row["allergen_class"], "allergy_rules", row["rule_id"]),
                drug_class=self.class_or_error(row["drug_class"], "allergy_rules", row["rule_id"]),
            )
            index[rule.allergen_class].append(rule)
        self.counts["allergy"] = len(self.tables.allergy_rules)
        return _frozen_index(index)

    def allergy_index(self, match: str) -> Mapping[str, frozenset[str]]:
        index: dict[str, set[str]] = defaultdict(set)
        for row in self.tables.allergy_keywords:
            if row["match"].strip().lower() == match:
                name = self.class_or_error(row["allergen_class"].strip(), "allergy_keywords", row["value"])
                index[row["value"].strip().lower()].add(name)
        return MappingProxyType({key: frozenset(names) for key, names in index.items()})

    def geriatric_rules(self) -> list[GeriatricRule]:
        rules = []
        for row in self.tables.geriatric:
            severity, tier = _severity(row, "geriatric")
            drugs = self.expand(row["drug"], "geriatric", row["rule_id"]) if row["drug"].strip() else {None}
            for ingredient in drugs:
                rules.append(
                    GeriatricRule(
                        row["rule_id"],
                        severity,
                        tier,
                        row["message"],
                        row["source"],
                        ingredient=ingredient,
                        min_age=int(row["min_age"]),
                        max_daily=_optional_float(row.get("max_daily")),
                        unit=(row.get("unit") or "").strip().lower() or None,
                        text_contains=(row.get("text_contains") or "").strip().lower() or None,
                    )
                )
        return rules

    def geriatric(self) -> Mapping[str, tuple[GeriatricRule, ...]]:
        index: dict[str, list[GeriatricRule]] = defaultdict(list)
        for rule in self.geriatric_rules():
            if rule.ingredient is not None:
                index[rule.ingredient].append(rule)
        self.counts["geriatric"] = len(self.tables.geriatric)
        return _frozen_index(index)

    def pgx(self) -> Mapping[str, tuple[PharmacogenomicRule, ...]]:
        index: dict[str, list[PharmacogenomicRule]] = defaultdict(list)
        for table, rows in (("pgx_cpic", self.tables.pgx_cpic), ("pgx_curated", self.tables.pgx_curated)):
            for row in rows:
                severity, tier = _severity(row, table)
                gene = row["gene"].strip().upper()
                phenotype = row["phenotype"]
                normalized = normalize_hla_result(phenotype) if "*" in gene else normalize_phenotype(phenotype)
                ingredient = self.canonical(row["drug"])
                index[ingredient].append(
                    PharmacogenomicRule(
                        row["rule_id"],
                        severity,
                        tier,
                        row["message"],
                        row["source"],
                        gene=gene,
                        phenotype=normalized,
                        ingredient=ingredient,
                    )
                )
            self.counts[f"pharmacogenomic.{table}"] = len(rows)
        return _frozen_index(index)
