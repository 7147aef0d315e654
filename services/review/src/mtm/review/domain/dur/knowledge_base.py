"""The DUR knowledge base: rule tables expanded through drug classes and indexed by ingredient for fast checks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, cast

from mtm.review.domain.dur.model import normalize_phenotype
from mtm.review.domain.dur.rules import (
    SAME_INGREDIENT,
    SEVERITY_RANK,
    AllergyRule,
    CodeSet,
    CombinationRule,
    ConditionRule,
    CriteriaRule,
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
    Severity,
    Tier,
)
from mtm.review.domain.dur.tables import LABEL_SECTIONS, TABLES, KnowledgeBaseError, Row, TableSpec

PairKey = frozenset[str]

CLASS_PREFIX = "class:"
ROLE_PREFIX = "role:"
LABEL_ORIGIN = "FDA label"
# Rows with a value here are kept out of the member lists (e.g. the ONC `suspect_expansion` flag).
MEMBER_FLAG = "flag"

__all__ = ["TABLES", "KnowledgeBase", "KnowledgeBaseError", "KnowledgeTables"]


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
    combinations: Sequence[Row] = ()
    dose_limits: Sequence[Row] = ()
    dose_schedule: Sequence[Row] = ()
    dose_criteria: Sequence[Row] = ()
    renal: Sequence[Row] = ()
    conditions: Sequence[Row] = ()
    allergy_keywords: Sequence[Row] = ()
    allergy_rules: Sequence[Row] = ()
    geriatric: Sequence[Row] = ()
    pgx_cpic: Sequence[Row] = ()
    pgx_curated: Sequence[Row] = ()
    pgx_diplotypes: Sequence[Row] = ()
    labels: Sequence[Row] = ()
    value_sets: Sequence[Row] = ()
    mechanism_roles: Sequence[Row] = ()
    routes: Sequence[Row] = ()
    label_interactions: Sequence[Row] = ()
    label_mechanisms: Sequence[Row] = ()
    label_conditions: Sequence[Row] = ()
    label_renal: Sequence[Row] = ()
    label_dose_limits: Sequence[Row] = ()
    label_pair_dose_limits: Sequence[Row] = ()
    label_allergies: Sequence[Row] = ()
    label_pgx: Sequence[Row] = ()
    class_duplication: Sequence[Row] = ()
    omissions: Sequence[Row] = ()
    dose_plausibility: Sequence[Row] = ()
    drug_omissions: Sequence[Row] = ()
    label_renal_interactions: Sequence[Row] = ()


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
    combinations: tuple[CombinationRule, ...] = ()
    dose_criteria: Mapping[str, tuple[CriteriaRule, ...]] = field(default_factory=dict)
    diplotypes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    rule_counts: Mapping[str, int] = field(default_factory=dict)
    pair_dose_limits: Mapping[str, tuple[PairDoseLimit, ...]] = field(default_factory=dict)
    omissions: tuple[OmissionRule, ...] = ()
    plausibility: tuple[PlausibilityRule, ...] = ()
    value_sets: Mapping[str, CodeSet] = field(default_factory=dict)
    local_routes: frozenset[str] = frozenset()
    systemic_by_local_route: frozenset[tuple[str, str]] = frozenset()
    drug_omissions: tuple[DrugOmissionRule, ...] = ()
    renal_interactions: Mapping[str, tuple[RenalInteractionRule, ...]] = field(default_factory=dict)

    def systemic(self, ingredient: str, route: str | None) -> bool:
        """Whether this ingredient, given by this route, reaches the circulation enough for systemic rules
        (interactions, class duplication, class combinations): a local route (eye, ear, nose, skin) does not,
        unless `routes.csv` names the ingredient as systemic by that route (timolol eye drops, testosterone gel).
        An unknown route counts as systemic, to err towards flagging."""
        return route is None or route not in self.local_routes or (ingredient, route) in self.systemic_by_local_route

    def acting(self, ingredients: tuple[str, ...], route: str | None) -> tuple[str, ...]:
        """The ingredients that act systemically as a product given by this route: ciprofloxacin eye drops do not
        meet tizanidine in the liver, so systemic interaction rules skip them (see `systemic`)."""
        where = (route or "").strip().lower()
        if where not in self.local_routes:
            return ingredients
        return tuple(name for name in ingredients if self.systemic(name, where))

    def canonical(self, ingredient: str) -> str:
        name = ingredient.strip().lower()
        return self.aliases.get(name, name)

    def phenotype(self, gene: str, result: str) -> str:
        """A normalized result; star alleles (`*1/*2`, either order) become the CPIC phenotype of the gene."""
        if not result.startswith("*"):
            return result
        first, _, second = result.partition("/")
        return self.diplotypes.get((gene, result)) or self.diplotypes.get((gene, f"{second}/{first}")) or result

    def named_ingredients(self) -> frozenset[str]:
        """Every ingredient a rule is keyed on or a class lists: each must be a name the vocabulary yields."""
        names = set(self.known_ingredients)
        for index in (
            self.dose_limits,
            self.dose_schedules,
            self.dose_criteria,
            self.renal,
            self.conditions,
            self.pair_dose_limits,
            self.renal_interactions,
        ):
            names.update(index)
        names.update(self.geriatric)
        for rule in self.omissions:
            names.update(rule.therapy_ingredients)
        for drug_rule in self.drug_omissions:
            names.update(drug_rule.trigger_ingredients | drug_rule.therapy_ingredients)
        for rules in self.pair_dose_limits.values():
            for pair_rule in rules:
                names.update(pair_rule.partners)
        for renal_rules in self.renal_interactions.values():
            for renal_rule in renal_rules:
                names.update(renal_rule.partners)
        return frozenset(names)

    @classmethod
    def from_tables(cls, tables: KnowledgeTables, specs: Sequence[TableSpec] = TABLES) -> KnowledgeBase:
        return _Builder(tables).build(specs)


def _severity(row: Row) -> tuple[Severity, Tier]:
    severity, tier = (row.get("severity") or "").strip(), (row.get("tier") or "").strip()
    if severity not in SEVERITY_RANK or tier not in ("interruptive", "passive"):
        raise KnowledgeBaseError(f"severity {severity!r}, tier {tier!r}")
    return cast(Severity, severity), cast(Tier, tier)


class _Builder:
    """Reads rows into rules by their table's spec; the only place rows become rules."""

    def __init__(self, tables: KnowledgeTables) -> None:
        self.tables = tables
        self.aliases = {row["name"].strip().lower(): row["canonical"].strip().lower() for row in tables.aliases}
        grouped: dict[str, set[str]] = defaultdict(set)
        for row in tables.classes:
            grouped[row["class"].strip()].add(self.canonical(row["ingredient"]))
        self.class_members = {name: frozenset(drugs) for name, drugs in grouped.items()}
        classes_of: dict[str, set[str]] = defaultdict(set)
        for name, drugs in self.class_members.items():
            for drug in drugs:
                classes_of[drug].add(name)
        self.classes_of = {drug: frozenset(names) for drug, names in classes_of.items()}
        self.groups: dict[tuple[tuple[str, ...], str, str], frozenset[str]] = {}
        self.counts: dict[str, int] = {}
        self.value_sets = _value_sets(tables.value_sets)
        self.labels = {row["set_id"].strip(): row for row in tables.labels}
        roles: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for row in tables.mechanism_roles:
            key = (row["mechanism"].strip().lower(), row["role"].strip().lower(), row["strength"].strip().lower())
            roles[key].add(self.canonical(row["drug"]))
        self.roles = {key: frozenset(drugs) for key, drugs in roles.items()}
        self.local_routes, self.systemic_by_local_route = self.route_exposure()

    def route_exposure(self) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """routes.csv: `local` rows name routes whose products act where applied; `systemic` rows name an
        ingredient that, by one of those routes, is meant to act systemically (or is absorbed enough to)."""
        local: set[str] = set()
        systemic: set[tuple[str, str]] = set()
        for row in self.tables.routes:
            route, exposure = row["route"].strip().lower(), row["exposure"].strip().lower()
            ingredient = (row.get("ingredient") or "").strip()
            if exposure == "local" and not ingredient:
                local.add(route)
            elif exposure == "systemic" and ingredient:
                systemic.add((self.canonical(ingredient), route))
            else:
                raise KnowledgeBaseError(f"routes: {route!r}: a local row must name no ingredient, a systemic row one")
        unknown = {route for _, route in systemic} - local
        if unknown:
            raise KnowledgeBaseError(f"routes: systemic rows for routes not listed as local: {sorted(unknown)}")
        return frozenset(local), frozenset(systemic)

    # --- the Names protocol the column readers use ----------------------------------------------------------

    def canonical(self, name: str) -> str:
        cleaned = name.strip().lower().replace("_", " ")
        return self.aliases.get(cleaned, cleaned)

    def known_class(self, name: str) -> str:
        if name != SAME_INGREDIENT and name not in self.class_members:
            raise KnowledgeBaseError(f"names unknown class {name!r}")
        return name

    def expand(self, token: str) -> frozenset[str]:
        """`class:nsaid` to its members, `role:cyp3a:inhibitor:strong` to the drugs with that mechanism role
        (`strong|moderate` for either, no strength for any), a plain name to its canonical ingredient; `a;b` is
        either, `a&b` both (a combined P-gp and strong CYP3A4 inhibitor), `a!b` a except b (a label's own
        exception: clarithromycin needs no apixaban dose change)."""
        token = token.strip()
        if ";" in token:
            return frozenset().union(*(self.expand(part) for part in token.split(";") if part.strip()))
        if "!" in token:
            kept, *dropped = token.split("!")
            return self.expand(kept) - frozenset().union(*(self.expand(part) for part in dropped))
        if "&" in token:
            parts = [self.expand(part) for part in token.split("&")]
            return frozenset.intersection(*parts)
        if token.lower().startswith(CLASS_PREFIX):
            return self.class_members[self.known_class(token[len(CLASS_PREFIX) :])]
        if token.lower().startswith(ROLE_PREFIX):
            return self.role(token[len(ROLE_PREFIX) :].lower())
        return frozenset({self.canonical(token)})

    def role(self, spec: str) -> frozenset[str]:
        mechanism, _, rest = spec.partition(":")
        role, _, strengths = rest.partition(":")
        wanted = set(strengths.split("|")) if strengths else None
        found = [
            drugs
            for (key_mechanism, key_role, key_strength), drugs in self.roles.items()
            if key_mechanism == mechanism and key_role == role and (wanted is None or key_strength in wanted)
        ]
        if not found:
            raise KnowledgeBaseError(f"names unknown mechanism role {spec!r} (see mechanism_roles.csv)")
        return frozenset().union(*found)

    def value_set(self, name: str) -> CodeSet:
        if name not in self.value_sets:
            raise KnowledgeBaseError(f"names unknown value set {name!r} (see value_sets.csv)")
        return self.value_sets[name]

    def cite(self, row: Row) -> str:
        """The source of a label-cited row: label title, set id, version and date, section, and the quote."""
        set_id, section, quote = ((row.get(column) or "").strip() for column in ("label_set_id", "section", "quote"))
        if not set_id or not section or not quote:
            raise KnowledgeBaseError("a label-cited row needs label_set_id, section and quote")
        label = self.labels.get(set_id)
        if label is None:
            raise KnowledgeBaseError(f"cites label set id {set_id!r}, which labels.csv does not list")
        if section not in LABEL_SECTIONS:
            raise KnowledgeBaseError(f"cites section {section!r}, not one of {sorted(LABEL_SECTIONS)}")
        source = (
            f"{LABEL_ORIGIN} {label['title'].strip()} (DailyMed set id {set_id}, version {label['version'].strip()}, "
            f"effective {label['effective'].strip()}), {LABEL_SECTIONS[section]}: \u201c{quote}\u201d"
        )
        extra = (row.get("source") or "").strip()
        return f"{source}; {extra}" if extra else source

    def members(self, tables: tuple[str, ...], key: str, role: str) -> frozenset[str]:
        if (tables, key, role) not in self.groups:
            grouped: dict[tuple[str, str], set[str]] = defaultdict(set)
            for table in tables:
                for row in getattr(self.tables, table):
                    if not (row.get(MEMBER_FLAG) or "").strip():
                        grouped[(row["pair_no"].strip(), row["role"].strip())].add(self.canonical(row["drug"]))
            for (number, side), drugs in grouped.items():
                self.groups[(tables, number, side)] = frozenset(drugs)
        return self.groups.get((tables, key, role), frozenset())

    # --- the generic loader ---------------------------------------------------------------------------------

    def rows(self, spec: TableSpec) -> Iterator[tuple[Rule, tuple[frozenset[str], frozenset[str]] | None]]:
        """Each row's rule (one per ingredient when the spec expands a drug column), with its pair sides."""
        for row in getattr(self.tables, spec.table):
            rule_id = (row.get("rule_id") or "").strip()
            try:
                severity, tier = _severity(row)
                values: dict[str, Any] = {name: read(self, row) for name, read in spec.fields.items()}
                message = (row.get("message") or "").strip()
                source = self.cite(row) if spec.cited else (row.get("source") or "").strip()
                common = (rule_id, severity, tier, message, source)
                if spec.sides is not None:
                    if any(_is_broad(row.get(column) or "") for column in spec.broad_columns):
                        values["precedence"] += 1
                    side_a, side_b = (side(self, row) for side in spec.sides)
                    yield spec.rule(*common, **values), (side_a, side_b)
                elif spec.expand is not None:
                    cell = (row.get(spec.expand) or "").strip()
                    if not cell and not spec.optional_drug:
                        raise KnowledgeBaseError(f"column {spec.expand!r} is empty")
                    for name in sorted(self.expand(cell)) if cell else [None]:
                        yield spec.rule(*common, ingredient=name, **values), None  # type: ignore[call-arg]
                else:
                    yield spec.rule(*common, **values), None
            except (KnowledgeBaseError, ValueError, KeyError, TypeError) as error:
                raise KnowledgeBaseError(f"{spec.table}: rule {rule_id!r}: {error}") from error

    def build(self, specs: Sequence[TableSpec]) -> KnowledgeBase:
        candidates: dict[PairKey, list[InteractionRule]] = defaultdict(list)
        collected: dict[str, list[Rule]] = defaultdict(list)
        for spec in specs:
            count = 0
            for rule, sides in self.rows(spec):
                if sides is None:
                    collected[spec.into].append(rule)
                    count += 1
                    continue
                for a in sides[0]:
                    for b in sides[1]:
                        if a != b:
                            candidates[frozenset((a, b))].append(cast(InteractionRule, rule))
                            count += 1
            self.counts[spec.table] = count
        interactions = _choose(candidates)
        indexes = {spec.into: spec.index for spec in specs}
        built: dict[str, Any] = {}
        for into, rules in collected.items():
            index = indexes[into]
            if index is None:
                built[into] = tuple(rules)
                continue
            grouped: dict[object, list[Rule]] = defaultdict(list)
            for rule in rules:
                grouped[getattr(rule, index)].append(rule)
            built[into] = grouped
        geriatric = built.pop("geriatric", {})
        geriatric_text = tuple(geriatric.pop(None, ()))
        pgx = built.get("pgx", {})
        known = set(self.classes_of) | set(self.aliases.values()) | set(pgx)
        for pair in interactions:
            known |= pair
        frozen = {
            name: MappingProxyType({key: tuple(values) for key, values in value.items()})
            if isinstance(value, dict)
            else value
            for name, value in built.items()
        }
        allowed = {item.name for item in fields(KnowledgeBase)}
        unknown = set(frozen) - allowed
        if unknown:
            raise KnowledgeBaseError(f"table specs feed unknown knowledge-base fields {sorted(unknown)}")
        empty_index: Mapping[str, tuple[Any, ...]] = MappingProxyType({})
        return KnowledgeBase(
            version=self.tables.version,
            aliases=MappingProxyType(self.aliases),
            class_members=MappingProxyType(self.class_members),
            classes_of=MappingProxyType(self.classes_of),
            interactions=MappingProxyType(interactions),
            interacting=frozenset(drug for pair in interactions for drug in pair),
            duplication=frozen.get("duplication", ()),
            dose_limits=frozen.get("dose_limits", empty_index),
            dose_schedules=frozen.get("dose_schedules", empty_index),
            renal=frozen.get("renal", empty_index),
            conditions=frozen.get("conditions", empty_index),
            allergy_rules=frozen.get("allergy_rules", empty_index),
            allergy_keywords=self.allergy_index("keyword"),
            allergy_snomed=self.allergy_index("snomed"),
            allergy_max_words=max(
                [len(name.split()) for name in known]
                + [len(row["value"].split()) for row in self.tables.allergy_keywords]
                + [1]
            ),
            geriatric=MappingProxyType({key: tuple(values) for key, values in geriatric.items()}),
            geriatric_text=geriatric_text,
            pgx=frozen.get("pgx", empty_index),
            known_ingredients=frozenset(known),
            combinations=frozen.get("combinations", ()),
            dose_criteria=frozen.get("dose_criteria", empty_index),
            pair_dose_limits=frozen.get("pair_dose_limits", empty_index),
            omissions=frozen.get("omissions", ()),
            drug_omissions=frozen.get("drug_omissions", ()),
            renal_interactions=frozen.get("renal_interactions", empty_index),
            plausibility=frozen.get("plausibility", ()),
            value_sets=MappingProxyType(self.value_sets),
            local_routes=self.local_routes,
            systemic_by_local_route=self.systemic_by_local_route,
            diplotypes=MappingProxyType(
                {
                    (row["gene"].strip().upper(), row["diplotype"].strip().lower()): normalize_phenotype(value)
                    for row in self.tables.pgx_diplotypes
                    if (value := row["phenotype"])
                }
            ),
            rule_counts=MappingProxyType(dict(self.counts)),
        )

    def allergy_index(self, match: str) -> Mapping[str, frozenset[str]]:
        index: dict[str, set[str]] = defaultdict(set)
        for row in self.tables.allergy_keywords:
            if row["match"].strip().lower() == match:
                try:
                    name = self.known_class(row["allergen_class"].strip())
                except KnowledgeBaseError as error:
                    raise KnowledgeBaseError(f"allergy_keywords: {row['value']!r}: {error}") from error
                index[row["value"].strip().lower()].add(name)
        return MappingProxyType({key: frozenset(names) for key, names in index.items()})


def _is_broad(token: str) -> bool:
    """A token naming a class or a mechanism role rather than drugs one by one."""
    lowered = token.lower()
    return CLASS_PREFIX in lowered or ROLE_PREFIX in lowered


def _value_sets(rows: Sequence[Row]) -> dict[str, CodeSet]:
    """value_sets.csv rows (`value_set,system,code,answer,...`) to one CodeSet per name.

    systems: `icd10cm` (a code matches itself and its subcodes), `snomed` (exact), `keyword` (words in the
    condition's text), `loinc` (an observation of that code whose answer, lowercased, is `answer`).
    """
    grouped: dict[str, CodeSet] = {}
    for row in rows:
        name, system = row["value_set"].strip(), row["system"].strip().lower()
        code, answer = row["code"].strip(), (row.get("answer") or "").strip().lower()
        if system == "icd10cm":
            part = CodeSet(icd10_prefixes=(code.upper(),))
        elif system == "snomed":
            part = CodeSet(snomed_codes=frozenset({code}))
        elif system == "keyword":
            part = CodeSet(keywords=(code.lower(),))
        elif system == "loinc" and answer:
            part = CodeSet(answers=((code, frozenset({" ".join(answer.split())})),))
        else:
            raise KnowledgeBaseError(f"value_sets: {name!r}: system {system!r} (loinc rows need an answer)")
        grouped[name] = grouped.get(name, CodeSet()) | part
    return grouped


def _choose(candidates: Mapping[PairKey, list[InteractionRule]]) -> dict[PairKey, InteractionRule]:
    """One rule per pair: lowest precedence, then highest severity, then a label-cited rule; its source names the
    other lists."""
    chosen: dict[PairKey, InteractionRule] = {}
    for pair, rules in candidates.items():
        ranked = sorted(
            rules,
            key=lambda rule: (
                rule.precedence,
                SEVERITY_RANK[rule.severity],
                not rule.origin.startswith(LABEL_ORIGIN),
                rule.rule_id,
            ),
        )
        best = ranked[0]
        others = sorted({rule.origin for rule in ranked[1:] if rule.origin != best.origin})
        if others:
            best = replace(best, source=f"{best.source}; also listed by: {', '.join(others)}")
        chosen[pair] = best
    return chosen
