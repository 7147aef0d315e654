"""The DUR checks, one function per alert kind; each returns findings and notes the checks it could not run."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from mtm.contracts import Alert
from mtm.contracts.events import AlertKind
from mtm.review.domain.dur.knowledge_base import LABEL_ORIGIN, KnowledgeBase
from mtm.review.domain.dur.model import CheckedMedication, CodedCondition, KidneyFunction, PatientContext
from mtm.review.domain.dur.rules import (
    ANY_ROUTE,
    SAME_INGREDIENT,
    SEVERITY_RANK,
    AllergyRule,
    CodeSet,
    ConditionRule,
    DoseLimit,
    DoseSchedule,
    DuplicationRule,
    GeriatricRule,
    PharmacogenomicRule,
    PlausibilityRule,
    RenalRule,
    Rule,
)
from mtm.review.domain.dur.tables import INGREDIENT_ALLERGEN

_MASS_IN_MCG = {"mcg": 1.0, "ug": 1.0, "µg": 1.0, "mg": 1000.0, "g": 1_000_000.0}
_WORDS = re.compile(r"[a-z0-9][a-z0-9\-']*")


@dataclass(frozen=True, slots=True)
class Medication:
    """A checked medication with its ingredients mapped to the knowledge base's names; `acting` are those that act
    systemically as it is given (`KnowledgeBase.acting`), which the interaction, duplication and class-combination
    checks compare."""

    index: int
    source: CheckedMedication
    ingredients: tuple[str, ...]
    acting: tuple[str, ...]


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


def within_cap(medication: Medication, ingredient: str, cap: float, unit: str) -> tuple[bool, float | None]:
    """(True, amount) when the daily amount is known and at most cap; else (False, amount or None if unknown)."""
    amount = daily_amount(medication, ingredient, unit)
    return amount is not None and amount <= cap + 1e-9, amount


def over_cap(
    medication: Medication, ingredient: str, cap: float, unit: str, review: Review, check: str
) -> float | None:
    """The daily amount when it is above cap; None when within it, or unknown (then the check is noted as not run)."""
    within, amount = within_cap(medication, ingredient, cap, unit)
    if amount is None:
        review.could_not_run(medication, check, "no daily amount in a comparable unit")
    return None if within else amount


def _better(candidate: Rule, kept: Rule | None) -> bool:
    return kept is None or SEVERITY_RANK[candidate.severity] < SEVERITY_RANK[kept.severity]


def cited(rule: Rule) -> bool:
    """The rule cites an FDA label section (set id, version, quote) rather than naming its source in words."""
    return rule.source.startswith(LABEL_ORIGIN)


def _preferred(candidate: Rule, kept: Rule | None) -> bool:
    """More severe wins; at equal severity a label-cited rule replaces one that is not."""
    if kept is None or _better(candidate, kept):
        return True
    return candidate.severity == kept.severity and cited(candidate) and not cited(kept)


# --- interaction ----------------------------------------------------------------------------------------------


def interactions(
    medications: list[Medication],
    kb: KnowledgeBase,
    review: Review,
    decided: Mapping[frozenset[str], Rule] | None = None,
) -> None:
    """One alert per pair of medications: a combination product (e.g. sulfamethoxazole-trimethoprim) that
    interacts through several ingredients gives one alert carrying the most severe rule. A pair in `decided` (a
    kidney-conditioned label rule fired for it, see `renal_interactions`) is left out unless its plain rule is the
    more severe."""
    decided = decided or {}
    groups: dict[frozenset[frozenset[str]], None] = {}
    for position, first in enumerate(medications):
        first_candidates = [name for name in first.acting if name in kb.interacting]
        if not first_candidates:
            continue
        for second in medications[position + 1 :]:
            pairs = {
                pair
                for a in first_candidates
                for b in second.acting
                if a != b
                and (pair := frozenset((a, b))) in kb.interactions
                and not _dose_decides(first, a, b, kb)
                and not _dose_decides(second, b, a, kb)
                and not _renal_decides(pair, decided, kb)
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


def _exposure(medication: Medication, ingredient: str) -> str:
    """`systemic`, or the local route the ingredient acts by: two products duplicate one another only when they
    act at the same place (oral and ophthalmic ciprofloxacin do not; two eye drops of one class do)."""
    return "systemic" if ingredient in medication.acting else str(medication.source.route).strip().lower()


def _kidney_function(
    context: PatientContext, measures: dict[tuple[str, str], KidneyFunction | None], key: tuple[str, str]
) -> KidneyFunction | None:
    """The patient's kidney function by a rule's measure and weight, computed once per check (`measures`)."""
    if key not in measures:
        measures[key] = context.kidney_function(*key)
    return measures[key]


def _renal_decides(pair: frozenset[str], decided: Mapping[frozenset[str], Rule], kb: KnowledgeBase) -> bool:
    """A kidney-conditioned rule already reported this pair, and the plain rule would say no more."""
    rule = decided.get(pair)
    return rule is not None and SEVERITY_RANK[kb.interactions[pair].severity] >= SEVERITY_RANK[rule.severity]


def renal_interactions(
    context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review
) -> dict[frozenset[str], Rule]:
    """A label's interaction that holds only in a range of kidney function (rivaroxaban with combined P-gp and
    moderate CYP3A inhibitors at CrCl 15 to <80): the alert names the measure and its value, and a measure that
    cannot be computed is noted as a check that did not run. Returns the pairs reported, for `interactions`."""
    reported: dict[frozenset[str], Rule] = {}
    if not kb.renal_interactions:
        return reported
    measures: dict[tuple[str, str], KidneyFunction | None] = {}
    for medication in medications:
        for ingredient in medication.acting:
            for rule in kb.renal_interactions.get(ingredient, ()):
                partners = sorted(
                    {
                        name
                        for other in medications
                        if other.index != medication.index
                        for name in other.acting
                        if name in rule.partners and name != ingredient
                    }
                )
                if not partners:
                    continue
                key = (rule.measure, rule.weight)
                kidney = _kidney_function(context, measures, key)
                if kidney is None:
                    review.could_not_run(
                        medication,
                        "kidney-conditioned interaction",
                        f"its label limits it with {', '.join(partners)} by {_MEASURE_INPUTS[key]}",
                    )
                    continue
                if rule.min_value is not None and kidney.value < rule.min_value:
                    continue
                if rule.max_value is not None and kidney.value >= rule.max_value:
                    continue
                for partner in partners:
                    pair = frozenset((ingredient, partner))
                    if pair in reported:
                        continue
                    reported[pair] = rule
                    review.add(
                        "interaction",
                        rule,
                        pair,
                        f"{display(ingredient)} + {partner} with {kidney.label}: {rule.message}",
                    )
    return reported


def _dose_decides(medication: Medication, ingredient: str, partner: str, kb: KnowledgeBase) -> bool:
    """A label caps this ingredient's dose while the partner is taken, and its daily amount is known: the dose-aware
    rule (`pair_doses`) decides, so the plain pair alert would only repeat it or, within the cap, be noise. Without
    a known dose the plain pair alert stays, as the reminder to check the dose."""
    return any(
        partner in rule.partners and daily_amount(medication, ingredient, rule.unit) is not None
        for rule in kb.pair_dose_limits.get(ingredient, ())
    )


# --- duplication ----------------------------------------------------------------------------------------------


def duplications(medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    holders: dict[tuple[str, str], set[int]] = defaultdict(set)
    in_class: dict[str, list[tuple[int, str]]] = defaultdict(list)
    routes = {medication.index: medication.source.route for medication in medications}
    exposures: dict[tuple[int, str], str] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            exposure = _exposure(medication, ingredient)
            exposures[(medication.index, ingredient)] = exposure
            holders[(ingredient, exposure)].add(medication.index)
            for name in kb.classes_of.get(ingredient, ()):
                in_class[name].append((medication.index, ingredient))
    for rule in kb.duplication:
        if rule.class_a == SAME_INGREDIENT:
            for (ingredient, _), indexes in sorted(holders.items()):
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
            if index_a != index_b
            and ingredient_a != ingredient_b
            and exposures[(index_a, ingredient_a)] == exposures[(index_b, ingredient_b)]
            and (not rule.same_route or _share_a_route({index_a, index_b}, routes))
            and not _distinct_roles(rule, ingredient_a, ingredient_b, kb)
            for ingredient in (ingredient_a, ingredient_b)
        }
        if implicated:
            names = " + ".join(sorted(implicated))
            review.add("duplication", rule, implicated, f"{display(names)}: {rule.message}")


def _distinct_roles(rule: DuplicationRule, first: str, second: str, kb: KnowledgeBase) -> bool:
    """The two belong to different subclasses the rule names as distinct roles (basal and prandial insulin)."""
    if not rule.except_across:
        return False
    first_roles = {name for name in rule.except_across if first in kb.class_members.get(name, ())}
    second_roles = {name for name in rule.except_across if second in kb.class_members.get(name, ())}
    return bool(first_roles and second_roles and first_roles.isdisjoint(second_roles))


def _share_a_route(indexes: set[int], routes: dict[int, str | None]) -> bool:
    """Two of these medications go by the same route (an unknown route may be any, so it matches)."""
    seen = [routes[index] for index in sorted(indexes)]
    return any(a is None or b is None or a == b for i, a in enumerate(seen) for b in seen[i + 1 :])


# --- combinations ---------------------------------------------------------------------------------------------


def combinations(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """Class combinations counted over distinct medications (Beers 2023 Table 5: two or more anticholinergics,
    three or more CNS-active drugs, corticosteroid + NSAID, alpha-1 blocker + loop diuretic in women). A rule that
    names routes counts medications by those routes; one that names none counts only systemic exposure."""
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
                    for ingredient in (medication.ingredients if rule.routes else medication.acting)
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


def _one_limit(rules: list[DoseLimit]) -> list[DoseLimit]:
    """One maximum per ingredient and route: the label's own when a label-cited row gives one (a curated row may
    restate the same maximum), else the curated one."""
    labelled = [rule for rule in rules if cited(rule)]
    return labelled[:1] if labelled else rules[:1]


def doses(medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """Daily totals against labelled maxima (all products of an ingredient summed). A total far above the maximum
    is reported as a probable unit or product error rather than an overdose; a dose that disagrees with the
    product's own strength by a unit factor, or many units at once, is reported as such too."""
    totals: dict[str, float] = defaultdict(float)
    limits: dict[str, DoseLimit] = {}
    contributors: dict[str, list[Medication]] = defaultdict(list)
    by_check = {rule.check: rule for rule in kb.plausibility}
    slipped: set[int] = set()
    for medication in medications:
        if _unit_slip(medication, by_check.get("unit_slip"), review) or _many_units(
            medication, by_check.get("units_per_dose"), review
        ):
            slipped.add(medication.index)
        for ingredient in medication.ingredients:
            for limit in _one_limit(_route_rules(kb.dose_limits.get(ingredient, ()), medication.source.route)):
                amount = daily_amount(medication, ingredient, limit.unit)
                if amount is None:
                    review.could_not_run(medication, "dose", "no daily amount in a comparable unit")
                    continue
                totals[limit.rule_id] += amount
                limits[limit.rule_id] = limit
                contributors[limit.rule_id].append(medication)
            for schedule in _route_rules(kb.dose_schedules.get(ingredient, ()), medication.source.route):
                _schedule(medication, ingredient, schedule, review)
    far = by_check.get("ratio_to_max")
    for rule_id, total in totals.items():
        limit = limits[rule_id]
        if total <= limit.max_daily + 1e-9:
            continue
        if all(medication.index in slipped for medication in contributors[rule_id]):
            continue  # already reported as a unit or product slip, which explains the total
        if far is not None and total >= far.threshold * limit.max_daily:
            products = "; ".join(_as_written(medication, limit.ingredient) for medication in contributors[rule_id])
            review.add(
                "dose",
                far,
                (limit.ingredient,),
                f"{display(limit.ingredient)} {total:g} {limit.unit}/day is {total / limit.max_daily:.0f} times the "
                f"labelled maximum of {limit.max_daily:g} {limit.unit}/day ({products}): {far.message}",
            )
            continue
        review.add(
            "dose",
            limit,
            (limit.ingredient,),
            f"{display(limit.ingredient)} {total:g} {limit.unit}/day "
            f"(maximum {limit.max_daily:g} {limit.unit}/day): {limit.message}",
        )


_MASS_UNITS = {"mcg": 1.0, "ug": 1.0, "µg": 1.0, "mg": 1000.0, "g": 1_000_000.0}
_UNIT_DOSE_WORDS = frozenset(
    {"tablet", "tablets", "tab", "tabs", "{tbl}", "capsule", "capsules", "cap", "caps", "{cap}"}
)
_SLIP = {"mg": "mcg", "mcg": "mg", "ug": "mg", "µg": "mg"}


def _as_written(medication: Medication, ingredient: str) -> str:
    """The product and dose as the list gives them, with the strength or concentration they imply."""
    source = medication.source
    parts = [f"'{source.text}'"]
    if source.dose_value is not None and source.dose_unit:
        parts.append(f"dose {source.dose_value:g} {source.dose_unit}")
    strength = source.strengths.get(ingredient)
    if strength is not None:
        parts.append(f"strength {strength[0]:g} {strength[1]}")
    if source.frequency_per_day:
        parts.append(f"{source.frequency_per_day:g} times a day")
    return ", ".join(parts)


def _unit_slip(medication: Medication, rule: PlausibilityRule | None, review: Review) -> bool:
    """A mass dose that is `threshold`-fold off the product's own strength, and one unit of it when read in
    the other mass unit: mg written for mcg (levothyroxine 100 mg for a 100 mcg tablet), or the reverse."""
    source = medication.source
    if rule is None or len(medication.ingredients) != 1 or source.dose_value is None or not source.dose_unit:
        return False
    ingredient = medication.ingredients[0]
    strength = source.strengths.get(ingredient)
    unit = source.dose_unit.strip().lower()
    if strength is None or unit not in _SLIP or strength[1] not in _MASS_UNITS or strength[0] <= 0:
        return False
    ratio = source.dose_value * _MASS_UNITS[unit] / (strength[0] * _MASS_UNITS[strength[1]])
    if 1 / rule.threshold < ratio < rule.threshold:
        return False
    other = source.dose_value * _MASS_UNITS[_SLIP[unit]] / (strength[0] * _MASS_UNITS[strength[1]])
    window = rule.window or rule.threshold
    if not 1 / window <= other <= window:
        return False
    review.add(
        "dose",
        rule,
        (ingredient,),
        f"{display(ingredient)}: dose {source.dose_value:g} {unit} is {ratio:g} times the "
        f"{strength[0]:g} {strength[1]} strength of '{source.text}'; as {source.dose_value:g} {_SLIP[unit]} it would "
        f"be {other:.2g} unit(s): {rule.message}",
    )
    return True


def _many_units(medication: Medication, rule: PlausibilityRule | None, review: Review) -> bool:
    source = medication.source
    if rule is None or source.dose_value is None or (source.dose_unit or "").strip().lower() not in _UNIT_DOSE_WORDS:
        return False
    if source.dose_value < rule.threshold:
        return False
    review.add(
        "dose",
        rule,
        medication.ingredients,
        f"'{source.text}': {source.dose_value:g} {source.dose_unit} at one administration: {rule.message}",
    )
    return True


def pair_doses(medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """A label's dose cap that applies only with another drug (simvastatin at most 20 mg/day with amlodipine); a
    partner applied where it acts (cyclosporine eye drops) does not count."""
    if not kb.pair_dose_limits:
        return
    present: dict[str, set[int]] = defaultdict(set)
    for medication in medications:
        for ingredient in medication.acting:
            present[ingredient].add(medication.index)
    for medication in medications:
        for ingredient in medication.ingredients:
            for rule in kb.pair_dose_limits.get(ingredient, ()):
                if rule.route is not None and medication.source.route not in (None, rule.route):
                    continue
                partners = sorted(name for name in rule.partners if name != ingredient and name in present)
                if not partners:
                    continue
                amount = over_cap(medication, ingredient, rule.max_daily, rule.unit, review, "interaction dose")
                if amount is None:
                    continue
                review.add(
                    "interaction",
                    rule,
                    (ingredient, *partners),
                    f"{display(ingredient)} {amount:g} {rule.unit}/day with {', '.join(partners)} "
                    f"(maximum {rule.max_daily:g} {rule.unit}/day with it): {rule.message}",
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
                if rule.route is not None and medication.source.route not in (None, rule.route):
                    continue
                key = (rule.measure, rule.weight)
                kidney = _kidney_function(context, measures, key)
                if kidney is None:
                    missing.add(_MEASURE_NEEDS[key])
                    continue
                if rule.min_value is not None and kidney.value < rule.min_value:
                    continue
                if rule.max_value is not None and kidney.value >= rule.max_value:
                    continue
                note = ""
                if rule.max_daily is not None and rule.unit is not None:
                    within, amount = within_cap(medication, ingredient, rule.max_daily, rule.unit)
                    if within:
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


_MEASURE_INPUTS = {
    ("crcl", "actual"): "creatinine clearance, which needs age, weight and serum creatinine",
    ("crcl", "adjusted"): "creatinine clearance on adjusted body weight, which needs age, weight, height and serum "
    "creatinine",
    ("egfr", "actual"): "eGFR, which needs an eGFR result or age and serum creatinine",
}
_MEASURE_NEEDS = {key: f"its label doses by {inputs}" for key, inputs in _MEASURE_INPUTS.items()}


# --- condition ------------------------------------------------------------------------------------------------


def _condition_matches(condition: CodedCondition, codes: CodeSet) -> bool:
    if condition.icd10 and codes.icd10_prefixes and condition.icd10.startswith(codes.icd10_prefixes):
        return True
    if condition.snomed and condition.snomed in codes.snomed_codes:
        return True
    return codes.words is not None and codes.words.search(condition.text) is not None


def find_condition(context: PatientContext, codes: CodeSet, include_resolved: bool) -> str | None:
    """How the patient meets the codes, for the message (`history of Deep vein thrombosis`, `pregnancy status
    'pregnant'`), or None. Active conditions first; resolved ones only when the rule says history counts."""
    found = None
    for coded in context.coded_conditions:
        if (coded.active or include_resolved) and _condition_matches(coded, codes):
            if coded.active:
                return coded.condition.text
            found = found or f"history of {coded.condition.text}"
    if found:
        return found
    for code, accepted in codes.answers:
        answer = context.answers.get(code)
        if answer is not None and answer in accepted:
            name = next((obs.text for obs in context.observations if obs.code == code), code)
            return f"{name} '{answer}'"
    return None


def _in_population(context: PatientContext, rule: ConditionRule) -> bool:
    """Age and sex limits; an unknown age or sex does not meet a limit (labels' age limits are mostly pediatric)."""
    age = context.age_years
    if rule.min_age is not None and (age is None or age < rule.min_age):
        return False
    if rule.max_age is not None and (age is None or age >= rule.max_age):
        return False
    return rule.sex is None or context.sex == rule.sex


def _route_applies(rule: ConditionRule, medication: Medication, ingredient: str) -> bool:
    """The rule's own route (an unknown route may be any), `*` for every route, else systemic exposure."""
    if rule.route == ANY_ROUTE:
        return True
    if rule.route is not None:
        return medication.source.route in (None, rule.route)
    return ingredient in medication.acting


def conditions(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    """Drug-condition and drug-population rules. A rule without codes is a population rule (age, sex) alone."""
    kept: dict[tuple[str, str], tuple[ConditionRule, str, str]] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            for rule in kb.conditions.get(ingredient, ()):
                if not _route_applies(rule, medication, ingredient):
                    continue
                if not _in_population(context, rule):
                    continue
                codes = rule.codes
                population_only = not (codes.icd10_prefixes or codes.snomed_codes or codes.keywords or codes.answers)
                if population_only:
                    found = f"age {context.age_years}" if context.age_years is not None else rule.condition
                else:
                    found = find_condition(context, codes, rule.include_resolved)
                    if found is None or find_condition(context, rule.unless, True) is not None:
                        continue
                note = ""
                if rule.max_daily is not None and rule.unit is not None:
                    within, amount = within_cap(medication, ingredient, rule.max_daily, rule.unit)
                    if within:
                        continue
                    if amount is None and population_only:
                        # Age alone is no finding: without a dose, say the check could not run.
                        review.could_not_run(medication, "dose", "no daily amount in a comparable unit")
                        continue
                    note = (
                        f" Current dose {amount:g} {rule.unit}/day."
                        if amount is not None
                        else f" Daily dose not known: check it against {rule.max_daily:g} {rule.unit}/day."
                    )
                key = (ingredient, rule.condition)
                if key not in kept or _preferred(rule, kept[key][0]):
                    kept[key] = (rule, found, note)
    for (ingredient, _), (rule, found, note) in kept.items():
        review.add("condition", rule, (ingredient,), f"{display(ingredient)} with {found}: {rule.message}{note}")


def omissions(
    context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review, unresolved: int = 0
) -> None:
    """Passive reminders: a documented condition without its well-established therapy (START-style). The
    reminder names how many medications could not be matched, since one of them may be the therapy."""
    if not kb.omissions or not context.conditions:
        return
    taking = {ingredient for medication in medications for ingredient in medication.ingredients}
    allergic = _allergens(context, kb)[0]
    for rule in kb.omissions:
        age = context.age_years
        if rule.min_age is not None and (age is None or age < rule.min_age):
            continue
        if rule.max_age is not None and (age is None or age >= rule.max_age):
            continue
        if taking & rule.therapy_ingredients or allergic & rule.therapy_ingredients:
            continue
        found = find_condition(context, rule.codes, rule.include_resolved)
        if found is None or find_condition(context, rule.unless, True) is not None:
            continue
        note = f" ({unresolved} medication(s) could not be matched: check them too.)" if unresolved else ""
        review.add("condition", rule, (), f"{found}, no {rule.therapy}: {rule.message}{note}")


def drug_omissions(
    context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review, unresolved: int = 0
) -> None:
    """Passive reminders triggered by a drug on the list: a companion therapy it calls for is missing (folic acid
    with methotrexate, a laxative with a regular opioid). A drug counts where it acts systemically, by the rule's
    routes when it names some, and, for a rule about regular use, not when it is taken only as needed."""
    if not kb.drug_omissions or not medications:
        return
    taking = {ingredient for medication in medications for ingredient in medication.ingredients}
    allergic: frozenset[str] | None = None
    age = context.age_years
    for rule in kb.drug_omissions:
        if rule.min_age is not None and (age is None or age < rule.min_age):
            continue
        if rule.max_age is not None and (age is None or age >= rule.max_age):
            continue
        triggers = sorted(
            {
                ingredient
                for medication in medications
                if not (rule.regular_only and medication.source.as_needed)
                and (not rule.routes or medication.source.route is None or medication.source.route in rule.routes)
                for ingredient in medication.acting
                if ingredient in rule.trigger_ingredients
            }
        )
        if not triggers or taking & rule.therapy_ingredients:
            continue
        if allergic is None:
            allergic = _allergens(context, kb)[0]
        if allergic & rule.therapy_ingredients or find_condition(context, rule.unless, True) is not None:
            continue
        note = f" ({unresolved} medication(s) could not be matched: check them too.)" if unresolved else ""
        review.add(
            "condition", rule, triggers, f"{display(' + '.join(triggers))}, no {rule.therapy}: {rule.message}{note}"
        )


# --- allergy --------------------------------------------------------------------------------------------------


def _phrases(text: str, longest: int) -> Iterator[str]:
    words = _WORDS.findall(text.lower())
    for start in range(len(words)):
        for size in range(1, min(longest, len(words) - start) + 1):
            yield " ".join(words[start : start + size])


def _allergens(
    context: PatientContext, kb: KnowledgeBase
) -> tuple[frozenset[str], list[tuple[str, frozenset[str], frozenset[str]]]]:
    """Ingredients and classes each documented allergy names; and all ingredients named by any allergy."""
    allergens: list[tuple[str, frozenset[str], frozenset[str]]] = []
    named: set[str] = set()
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
        # Each named ingredient is also an allergen of its own, for label rules naming one related drug.
        classes |= {INGREDIENT_ALLERGEN + name for name in ingredients}
        if ingredients or classes:
            allergens.append((allergy.text, frozenset(ingredients), frozenset(classes)))
            named |= ingredients
    return frozenset(named), allergens


def allergies(context: PatientContext, medications: list[Medication], kb: KnowledgeBase, review: Review) -> None:
    if not context.allergies:
        return
    allergens = _allergens(context, kb)[1]
    if not allergens:
        return
    same_ingredient = kb.allergy_rules.get(SAME_INGREDIENT, ())
    kept: dict[str, tuple[AllergyRule, str]] = {}
    for medication in medications:
        for ingredient in medication.ingredients:
            for allergy_text, ingredients, classes in allergens:
                candidates: list[AllergyRule] = (
                    [rule for rule in same_ingredient if rule.ingredient in (None, ingredient)]
                    if ingredient in ingredients
                    else []
                )
                for allergen_class in classes:
                    for rule in kb.allergy_rules.get(allergen_class, ()):
                        if rule.ingredient is not None:
                            if rule.ingredient == ingredient:
                                candidates.append(rule)
                        elif ingredient in kb.class_members.get(rule.drug_class, ()):
                            candidates.append(rule)
                # A label's own rule for this drug goes first, so it is kept over the generic one at equal severity.
                for rule in sorted(candidates, key=lambda rule: rule.ingredient is None):
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
        # Beers criteria are about systemic use (atropine "excludes ophthalmic"): eye drops and creams are left out.
        for ingredient in medication.acting:
            rules = kb.geriatric.get(ingredient, ())
            if rules and age is None:
                review.could_not_run(medication, "geriatric", "age unknown")
                continue
            kept: GeriatricRule | None = None
            for rule in rules:
                if age is None or age < rule.min_age:
                    continue
                if rule.max_daily is not None and rule.unit is not None:
                    if over_cap(medication, ingredient, rule.max_daily, rule.unit, review, "geriatric dose") is None:
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
