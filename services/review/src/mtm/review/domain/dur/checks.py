"""The DUR checks, one function per alert kind; each returns findings and notes the checks it could not run."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from mtm.contracts import Alert, Condition
from mtm.contracts.events import AlertKind
from mtm.review.domain.dur.knowledge_base import KnowledgeBase
from mtm.review.domain.dur.model import CheckedMedication, KidneyFunction, PatientContext
from mtm.review.domain.dur.rules import (
    SAME_INGREDIENT,
    SEVERITY_RANK,
    AllergyRule,
    ConditionRule,
    DoseLimit,
    DoseSchedule,
    GeriatricRule,
    PharmacogenomicRule,
    RenalRule,
    Rule,
)

ICD10_SYSTEMS = ("icd-10", "icd10")
SNOMED_SYSTEMS = ("snomed",)
ACTIVE_CLINICAL_STATUS = frozenset({"active", "recurrence", "relapse"})
_MASS_IN_MCG = {"mcg": 1.0, "ug": 1.0, "µg": 1.0, "mg": 1000.0, "g": 1_000_000.0}
_WORDS = re.compile(r"[a-z0-9][a-z0-9\-']*")


@dataclass(frozen=True, slots=True)
class Medication:
    """A checked medication with its ingredients mapped to the knowledge base's names."""

    index: int
    source: CheckedMedication
    ingredients: tuple[str, ...]


@dataclass(slots=True)
class Review:
    """Mutable scratchpad of one `check` call: findings, and per medication the checks that could not run."""

    alerts: list[Alert] = field(default_factory=list)
    not_run: dict[int, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, kind: AlertKind, rule: Rule, ingredients: Iterable[str], message: str) -> None:
        self.alerts.append(
            Alert(
                kind=kind,
                severity=rule.severity,
                tier=rule.tier,
                ingredients=tuple(sorted(set(ingredients))),
                message=message,
                source=rule.source,
                rule_id=rule.rule_id,
            )
        )

    def could_not_run(self, medication: Medication, check: str, reason: str) -> None:
        self.not_run[medication.index].setdefault(check, reason)


def display(ingredient: str) -> str:
    return ingredient[:1].upper() + ingredient[1:]


def convert(amount: float, unit: str, to_unit: str) -> float | None:
    """Amount in to_unit, or None when the units are not comparable (e.g. mL vs mg)."""
    unit, to_unit = unit.strip().lower(), to_unit.strip().lower()
    if unit == to_unit:
        return amount
    if unit in _MASS_IN_MCG and to_unit in _MASS_IN_MCG:
        return amount * _MASS_IN_MCG[unit] / _MASS_IN_MCG[to_unit]
    return None


def daily_amount(medication: Medication, ingredient: str, unit: str) -> float | None:
    for name, (amount, amount_unit) in medication.source.daily_amounts.items():
        if name.strip().lower() == ingredient:
            return convert(amount, amount_unit, unit)
    return None


def _better(candidate: Rule, kept: Rule | None) -> bool:
    return kept is None or SEVERITY_RANK[candidate.severity] < SEVERITY_RANK[kept.severity]


# --- interaction ----------------------------------------------------------------------------------------------


def interactions(medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """One alert per pair of medications: a combination product (e.g. sulfamethoxazole-trimethoprim) that
    interacts through several ingredients gives one alert carrying the most severe rule."""
    groups: dict[frozenset[frozenset[str]], None] = {}
    for position, first in enumerate(medications):
        first_candidates = [name for name in first.ingredients if name in kb.interacting]
        if not first_candidates:
            continue
        for second in medications[position + 1 :]:
            pairs = {
                pair
                for a in first_candidates
                for b in second.ingredients
                if a != b and (pair := frozenset((a, b))) in kb.interactions
            }
            if pairs:
                groups[frozenset(pairs)] = None
    reported: set[frozenset[str]] = set()
    for group in sorted(groups, key=lambda pairs: (-len(pairs), sorted(map(sorted, pairs)))):
        pairs = sorted((pair for pair in group if pair not in reported), key=sorted)
        if not pairs:
            continue
        reported.update(pairs)
        ranked = sorted(pairs, key=lambda pair: (SEVERITY_RANK[kb.interactions[pair].severity], sorted(pair)))
        best = ranked[0]
        rule = kb.interactions[best]
        a, b = sorted(best)
        message = f"{display(a)} + {b}: {rule.message}"
        others = [f"{' + '.join(sorted(pair))} ({kb.interactions[pair].severity})" for pair in ranked[1:]]
        if others:
            message += f" Same combination also: {', '.join(others)}."
        review.add("interaction", rule, {name for pair in pairs for name in pair}, message)


# --- duplication ----------------------------------------------------------------------------------------------


def duplications(medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    holders: dict[str, set[int]] = defaultdict(set)
    in_class: dict[str, list[tuple[int, str]]] = defaultdict(list)
    routes = {medication.index: medication.source.route for medication in medications}
    for medication in medications:
        for ingredient in medication.ingredients:
            holders[ingredient].add(medication.index)
            for name in kb.classes_of.get(ingredient, ()):
                in_class[name].append((medication.index, ingredient))
    for rule in kb.duplication:
        if rule.class_a == SAME_INGREDIENT:
            for ingredient, indexes in sorted(holders.items()):
                if len(indexes) > 1 and (not rule.same_route or _share_a_route(indexes, routes)):
                    review.add(
                        "duplication",
                        rule,
                        (ingredient,),
                        f"{display(ingredient)} is in {len(indexes)} medications: {rule.message}",
                    )
            continue
        side_a, side_b = in_class.get(rule.class_a, []), in_class.get(rule.class_b, [])
        implicated = {
            ingredient
            for index_a, ingredient_a in side_a
            for index_b, ingredient_b in side_b
            if index_a != index_b and ingredient_a != ingredient_b
            for ingredient in (ingredient_a, ingredient_b)
        }
        if implicated:
            names = " + ".join(sorted(implicated))
            review.add("duplication", rule, implicated, f"{display(names)}: {rule.message}")


def _share_a_route(indexes: set[int], routes: dict[int, str | None]) -> bool:
    """Two of these medications go by the same route (an unknown route may be any, so it matches)."""
    seen = [routes[index] for index in sorted(indexes)]
    return any(a is None or b is None or a == b for i, a in enumerate(seen) for b in seen[i + 1 :])


# --- combinations ---------------------------------------------------------------------------------------------


def combinations(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """Class combinations counted over distinct medications (Beers 2023 Table 5: two or more anticholinergics,
    three or more CNS-active drugs, corticosteroid + NSAID, alpha-1 blocker + loop diuretic in women)."""
    for rule in kb.combinations:
        if rule.sex is not None and context.sex != rule.sex:
            continue
        if rule.min_age is not None and (context.age_years is None or context.age_years < rule.min_age):
            continue
        holders: list[dict[int, str]] = []
        for name in rule.classes:
            members = kb.class_members.get(name, frozenset())
            holders.append(
                {
                    medication.index: ingredient
                    for medication in medications
                    if not rule.routes or medication.source.route is None or medication.source.route in rule.routes
                    for ingredient in medication.ingredients
                    if ingredient in members
                }
            )
        if not all(holders):
            continue
        involved: dict[int, str] = {}
        for found in holders:
            involved.update(found)
        if len(involved) < rule.min_count:
            continue
        if len(holders) > 1 and not _distinct_choice(holders):
            continue
        names = sorted(set(involved.values()))
        count = f"{len(involved)} medications: " if len(rule.classes) == 1 else ""
        review.add(rule.kind, rule, names, f"{count}{display(' + '.join(names))}: {rule.message}")  # type: ignore[arg-type]


def _distinct_choice(holders: list[dict[int, str]]) -> bool:
    """True when each class can be covered by a different medication (one product is not a combination)."""

    def assign(position: int, used: frozenset[int]) -> bool:
        if position == len(holders):
            return True
        return any(assign(position + 1, used | {index}) for index in holders[position] if index not in used)

    return assign(0, frozenset())


# --- dose -----------------------------------------------------------------------------------------------------


RouteRule = TypeVar("RouteRule", DoseLimit, DoseSchedule)


def _route_rules(rules: Iterable[RouteRule], route: str | None) -> list[RouteRule]:
    """Rules for the medication's route; when the route is unknown, the oral rule (the usual case) applies."""
    rules = list(rules)
    wanted = (route or "oral").lower()
    exact = [rule for rule in rules if rule.route == wanted]
    return exact or [rule for rule in rules if rule.route == "*"]


def doses(medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    totals: dict[str, float] = defaultdict(float)
    limits: dict[str, DoseLimit] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            for limit in _route_rules(kb.dose_limits.get(ingredient, ()), medication.source.route):
                amount = daily_amount(medication, ingredient, limit.unit)
                if amount is None:
                    review.could_not_run(medication, "dose", "no daily amount in a comparable unit")
                    continue
                totals[limit.rule_id] += amount
                limits[limit.rule_id] = limit
            for schedule in _route_rules(kb.dose_schedules.get(ingredient, ()), medication.source.route):
                _schedule(medication, ingredient, schedule, review)
    for rule_id, total in totals.items():
        limit = limits[rule_id]
        if total > limit.max_daily + 1e-9:
            review.add(
                "dose",
                limit,
                (limit.ingredient,),
                f"{display(limit.ingredient)} {total:g} {limit.unit}/day "
                f"(maximum {limit.max_daily:g} {limit.unit}/day): {limit.message}",
            )


def dose_criteria(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """Dose rules decided by how many patient criteria hold; criteria that cannot be evaluated are named."""
    for medication in medications:
        for ingredient in medication.ingredients:
            for rule in kb.dose_criteria.get(ingredient, ()):
                met: list[str] = []
                unknown: list[str] = []
                for criterion in rule.criteria:
                    value = getattr(context, criterion.fact)
                    if value is None:
                        unknown.append(str(criterion))
                    elif criterion.holds(float(value)):
                        met.append(str(criterion))
                if len(met) > rule.max_met or len(met) + len(unknown) < rule.min_met:
                    continue
                if len(met) < rule.min_met:
                    review.could_not_run(medication, "dose criteria", f"unknown: {', '.join(unknown)}")
                    continue
                amount = daily_amount(medication, ingredient, rule.unit)
                if amount is None:
                    review.could_not_run(medication, "dose", "no daily amount in a comparable unit")
                    continue
                if rule.min_daily is not None and amount < rule.min_daily - 1e-9:
                    continue
                if rule.max_daily is not None and amount > rule.max_daily + 1e-9:
                    continue
                if len(met) + len(unknown) > rule.max_met and unknown:
                    review.could_not_run(medication, "dose criteria", f"unknown: {', '.join(unknown)}")
                    continue
                criteria = ", ".join(met) if met else "none"
                review.add(
                    "dose",
                    rule,
                    (ingredient,),
                    f"{display(ingredient)} {amount:g} {rule.unit}/day with {len(met)} of "
                    f"{len(rule.criteria)} criteria met ({criteria}): {rule.message}",
                )


def _schedule(medication: Medication, ingredient: str, schedule: DoseSchedule, review: Review) -> None:
    frequency = medication.source.frequency_per_day
    if frequency is None or frequency <= 0:
        review.could_not_run(medication, "dosing schedule", "no frequency")
        return
    if frequency <= schedule.max_frequency_per_day + 1e-9:
        return
    single = None
    amount = daily_amount(medication, ingredient, schedule.unit)
    if amount is not None:
        single = amount / frequency
    if schedule.min_single_dose > 0 and single is None:
        review.could_not_run(medication, "dosing schedule", "no daily amount in a comparable unit")
        return
    if single is not None and single < schedule.min_single_dose:
        return
    dose = f"{single:g} {schedule.unit} " if single is not None else ""
    times = {1.0: "once", 2.0: "twice"}.get(frequency, f"{frequency:g} times")
    review.add(
        "dose",
        schedule,
        (ingredient,),
        f"{display(ingredient)} {dose}{times} a day: {schedule.message}",
    )


# --- renal ----------------------------------------------------------------------------------------------------


def renal(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """Each rule compares the measure its label states (CrCl or eGFR); the alert names the measure and value."""
    measures: dict[tuple[str, str], KidneyFunction | None] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            rules = kb.renal.get(ingredient)
            if not rules:
                continue
            kept: RenalRule | None = None
            kept_kidney: KidneyFunction | None = None
            detail = ""
            missing: set[str] = set()
            for rule in rules:
                key = (rule.measure, rule.weight)
                if key not in measures:
                    measures[key] = context.kidney_function(rule.measure, rule.weight)
                kidney = measures[key]
                if kidney is None:
                    missing.add(_MEASURE_NEEDS[key])
                    continue
                if rule.min_value is not None and kidney.value < rule.min_value:
                    continue
                if rule.max_value is not None and kidney.value >= rule.max_value:
                    continue
                note = ""
                if rule.max_daily is not None and rule.unit is not None:
                    amount = daily_amount(medication, ingredient, rule.unit)
                    if amount is not None and amount <= rule.max_daily + 1e-9:
                        continue
                    note = (
                        f" Current dose {amount:g} {rule.unit}/day."
                        if amount is not None
                        else f" Daily dose not known: check it against {rule.max_daily:g} {rule.unit}/day."
                    )
                if _better(rule, kept):
                    kept, kept_kidney, detail = rule, kidney, note
            if kept is not None and kept_kidney is not None:
                review.add(
                    "renal",
                    kept,
                    (ingredient,),
                    f"{display(ingredient)} with {kept_kidney.label}: {kept.message}{detail}",
                )
            elif missing:
                review.could_not_run(medication, "renal", "; ".join(sorted(missing)))


_MEASURE_NEEDS = {
    ("crcl", "actual"): "its label doses by creatinine clearance, which needs age, weight and serum creatinine",
    ("crcl", "adjusted"): "its label doses by creatinine clearance on adjusted body weight, which needs age, "
    "weight, height and serum creatinine",
    ("egfr", "actual"): "its label doses by eGFR, which needs an eGFR result or age and serum creatinine",
}


# --- condition ------------------------------------------------------------------------------------------------


def _condition_matches(condition: Condition, rule: ConditionRule) -> bool:
    code = (condition.code or "").strip()
    system = (condition.system or "").lower()
    if code:
        is_icd = any(token in system for token in ICD10_SYSTEMS) or not system
        is_snomed = any(token in system for token in SNOMED_SYSTEMS) or not system
        if is_icd and any(code.upper().startswith(prefix) for prefix in rule.icd10_prefixes):
            return True
        if is_snomed and code in rule.snomed_codes:
            return True
    text = condition.text.lower()
    return any(keyword in text for keyword in rule.keywords)


def conditions(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    if not context.conditions:
        return
    kept: dict[tuple[str, str], tuple[ConditionRule, Condition]] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            for rule in kb.conditions.get(ingredient, ()):
                if rule.route is not None and medication.source.route not in (None, rule.route):
                    continue
                for condition in context.conditions:
                    active = condition.clinical_status.lower() in ACTIVE_CLINICAL_STATUS
                    if not (active or rule.include_resolved) or not _condition_matches(condition, rule):
                        continue
                    key = (ingredient, rule.condition)
                    if key not in kept or _better(rule, kept[key][0]):
                        kept[key] = (rule, condition)
    for (ingredient, _), (rule, condition) in kept.items():
        history = "" if condition.clinical_status.lower() in ACTIVE_CLINICAL_STATUS else "history of "
        review.add(
            "condition",
            rule,
            (ingredient,),
            f"{display(ingredient)} with {history}{condition.text}: {rule.message}",
        )


# --- allergy --------------------------------------------------------------------------------------------------


def _phrases(text: str, longest: int) -> Iterator[str]:
    words = _WORDS.findall(text.lower())
    for start in range(len(words)):
        for size in range(1, min(longest, len(words) - start) + 1):
            yield " ".join(words[start : start + size])


def allergies(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    if not context.allergies:
        return
    allergens: list[tuple[str, frozenset[str], frozenset[str]]] = []
    for allergy in context.allergies:
        ingredients: set[str] = set()
        classes: set[str] = set()
        for phrase in _phrases(allergy.text, kb.allergy_max_words):
            name = kb.aliases.get(phrase, phrase)
            if name in kb.known_ingredients:
                ingredients.add(name)
                classes |= kb.classes_of.get(name, frozenset())
            classes |= kb.allergy_keywords.get(phrase, frozenset())
        if allergy.code:
            classes |= kb.allergy_snomed.get(allergy.code.strip(), frozenset())
        if ingredients or classes:
            allergens.append((allergy.text, frozenset(ingredients), frozenset(classes)))
    if not allergens:
        return
    same_ingredient = kb.allergy_rules.get(SAME_INGREDIENT, ())
    kept: dict[str, tuple[AllergyRule, str]] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            for allergy_text, ingredients, classes in allergens:
                candidates: list[AllergyRule] = list(same_ingredient) if ingredient in ingredients else []
                for allergen_class in classes:
                    for rule in kb.allergy_rules.get(allergen_class, ()):
                        if ingredient in kb.class_members.get(rule.drug_class, ()):
                            candidates.append(rule)
                for rule in candidates:
                    if ingredient not in kept or _better(rule, kept[ingredient][0]):
                        kept[ingredient] = (rule, allergy_text)
    for ingredient, (rule, allergy_text) in kept.items():
        review.add(
            "allergy",
            rule,
            (ingredient,),
            f"{display(ingredient)} with documented allergy to '{allergy_text}': {rule.message}",
        )


# --- geriatric ------------------------------------------------------------------------------------------------


def geriatric(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    age = context.age_years
    for medication in medications:
        for ingredient in medication.ingredients:
            rules = kb.geriatric.get(ingredient, ())
            if rules and age is None:
                review.could_not_run(medication, "geriatric", "age unknown")
                continue
            kept: GeriatricRule | None = None
            for rule in rules:
                if age is None or age < rule.min_age:
                    continue
                if rule.max_daily is not None and rule.unit is not None:
                    amount = daily_amount(medication, ingredient, rule.unit)
                    if amount is None:
                        review.could_not_run(medication, "geriatric dose", "no daily amount in a comparable unit")
                        continue
                    if amount <= rule.max_daily + 1e-9:
                        continue
                if _better(rule, kept):
                    kept = rule
            if kept is not None:
                review.add("geriatric", kept, (ingredient,), f"{display(ingredient)}, age {age}: {kept.message}")
        text = medication.source.text.lower()
        for rule in kb.geriatric_text:
            if age is not None and age >= rule.min_age and rule.text_contains and rule.text_contains in text:
                review.add(
                    "geriatric", rule, medication.ingredients, f"'{medication.source.text}', age {age}: {rule.message}"
                )


# --- pharmacogenomic ------------------------------------------------------------------------------------------


def pharmacogenomics(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    if not context.pgx and not context.hla:
        return
    kept: dict[tuple[str, str], PharmacogenomicRule] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            for rule in kb.pgx.get(ingredient, ()):
                if "*" in rule.gene:
                    result = context.hla.get(rule.gene)
                else:
                    stated = context.pgx.get(rule.gene)
                    result = kb.phenotype(rule.gene, stated) if stated is not None else None
                if result != rule.phenotype:
                    continue
                key = (ingredient, rule.gene)
                if key not in kept or _better(rule, kept[key]):
                    kept[key] = rule
    for (ingredient, gene), rule in kept.items():
        review.add(
            "pharmacogenomic",
            rule,
            (ingredient,),
            f"{display(ingredient)} with {gene} {rule.phenotype}: {rule.message}",
        )
