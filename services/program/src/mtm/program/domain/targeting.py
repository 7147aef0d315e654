"""CMS Part D MTM targeting (42 CFR 423.153(d)(2)): who is eligible, and why, as a pure function of the record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from itertools import chain
from operator import attrgetter

from mtm.contracts.program import (
    ChronicDisease,
    CostBasis,
    EligibilityDetermination,
    EvaluationTrigger,
    TargetingBasis,
    TargetingCriteria,
    TargetingFindings,
)

ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
# A fill or order for fewer days than this is a short course (a 10-day antibiotic), not a maintenance drug.
MAINTENANCE_MIN_DAYS = 28
LOOKBACK_DAYS = 365
# Costs seen over less than this are not projected to a year: a single early fill says little about a year.
MIN_PROJECTION_DAYS = 90
# Distinct written codes remembered by the tables before they start again: bounds the memory of a long sweep.
_SEEN_CODES = 50_000
# Plans whose terms are remembered: a service has one; more only in tests, which make a plan per call.
_TERMS = 64
GENERIC_DRUGS_IN_THRESHOLD = 8
"""CMS set the 2025 threshold at the average cost of 8 generic drugs: the default per-drug estimate is 1/8 of it."""

_DISEASE_WORDS: dict[str, str] = {
    "alzheimers-disease": "Alzheimer's disease",
    "bone-disease-arthritis": "bone disease-arthritis",
    "heart-failure": "heart failure",
    "diabetes": "diabetes",
    "dyslipidemia": "dyslipidemia",
    "end-stage-renal-disease": "end-stage renal disease",
    "hiv-aids": "HIV/AIDS",
    "hypertension": "hypertension",
    "mental-health": "mental health",
    "respiratory-disease": "respiratory disease",
}


@dataclass(frozen=True, slots=True)
class ProgramYear:
    year: int
    annual_cost_threshold: float
    max_chronic_diseases: int
    max_maintenance_drugs: int


@dataclass(frozen=True, slots=True)
class DiseaseCode:
    system: str
    code: str
    prefix: bool
    category: ChronicDisease


@dataclass(frozen=True)
class TargetingTables:
    """The data files: program years with their thresholds, and condition codes → core chronic disease."""

    years: Mapping[int, ProgramYear]
    exact: Mapping[tuple[str, str], tuple[ChronicDisease, ...]]
    prefixes: Mapping[str, tuple[tuple[str, ChronicDisease], ...]]
    # The prefixes again, by length: a code is looked up once per distinct prefix length (a handful) instead of
    # being compared with every prefix of its system, which dominated a targeting sweep.
    _by_length: Mapping[str, tuple[tuple[int, Mapping[str, tuple[ChronicDisease, ...]]], ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # Codes as written → their categories: a plan's members share a few thousand codes, each normalised once.
    _seen: dict[tuple[str | None, str | None], tuple[ChronicDisease, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    # The same codes → their categories as bits (one per category, in name order), and bits → the sorted names:
    # a member's diseases are an OR of a few ints and one lookup, not a set to fill and sort.
    _bits: dict[tuple[str | None, str | None], int] = field(default_factory=dict, repr=False, compare=False)
    _named: dict[int, tuple[ChronicDisease, ...]] = field(default_factory=dict, repr=False, compare=False)
    _bit_of: Mapping[ChronicDisease, int] = field(default_factory=dict, repr=False, compare=False)
    # (program year, id of the plan) → its terms, each holding its plan so that the id is not reused while cached.
    _terms: dict[tuple[int, int], _Terms] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, dict[int, dict[str, list[ChronicDisease]]]] = {}
        for system, rows in self.prefixes.items():
            for prefix, category in rows:
                index.setdefault(system, {}).setdefault(len(prefix), {}).setdefault(prefix, []).append(category)
        by_length = {
            system: tuple((n, {p: tuple(c) for p, c in found.items()}) for n, found in sorted(lengths.items()))
            for system, lengths in index.items()
        }
        object.__setattr__(self, "_by_length", by_length)
        named = sorted(
            {c for found in self.exact.values() for c in found} | {c for _, c in chain(*self.prefixes.values())}
        )
        object.__setattr__(self, "_bit_of", {category: 1 << n for n, category in enumerate(named)})

    @classmethod
    def of(cls, years: Iterable[ProgramYear], codes: Iterable[DiseaseCode]) -> TargetingTables:
        exact: dict[tuple[str, str], list[ChronicDisease]] = {}
        prefixes: dict[str, list[tuple[str, ChronicDisease]]] = {}
        for row in codes:
            code = _normal_code(row.code)
            if row.prefix:
                prefixes.setdefault(row.system, []).append((code, row.category))
            else:
                exact.setdefault((row.system, code), []).append(row.category)
        return cls(
            years={y.year: y for y in years},
            exact={k: tuple(v) for k, v in exact.items()},
            prefixes={k: tuple(v) for k, v in prefixes.items()},
        )

    def program_year(self, year: int) -> ProgramYear:
        """The year's row, else the latest earlier one (a new year's memo may not be in the table yet)."""
        known = [y for y in self.years if y <= year]
        if not known:
            raise ValueError(f"no targeting thresholds for program year {year} or earlier")
        return self.years[max(known)]

    def terms(self, year: int, plan: Plan) -> _Terms:
        """The plan's criteria for a program year, checked against the year's limits once per year and plan."""
        found = self._terms.get((year, id(plan)))
        if found is None:
            program = self.program_year(year)
            if not 2 <= plan.min_chronic_diseases <= program.max_chronic_diseases:
                raise ValueError(f"a plan may require 2 to {program.max_chronic_diseases} chronic diseases")
            if not 2 <= plan.min_maintenance_drugs <= program.max_maintenance_drugs:
                raise ValueError(f"a plan may require 2 to {program.max_maintenance_drugs} maintenance drugs")
            criteria = TargetingCriteria(
                program_year=year,
                min_chronic_diseases=plan.min_chronic_diseases,
                min_maintenance_drugs=plan.min_maintenance_drugs,
                annual_cost_threshold=program.annual_cost_threshold,
            )
            per_drug = plan.cost_per_maintenance_drug or program.annual_cost_threshold / GENERIC_DRUGS_IN_THRESHOLD
            if len(self._terms) >= _TERMS:
                self._terms.clear()
            found = self._terms[(year, id(plan))] = _Terms(plan, criteria, per_drug)
        return found

    def _disease_bits(self, system: str | None, code: str | None) -> int:
        bits = 0
        for category in self.categories(system, code):
            bits |= self._bit_of[category]
        if len(self._bits) >= _SEEN_CODES:
            self._bits.clear()
        self._bits[(system, code)] = bits
        return bits

    def _diseases_of(self, bits: int) -> tuple[ChronicDisease, ...]:
        found = self._named.get(bits)
        if found is None:
            found = self._named[bits] = tuple(c for c, bit in self._bit_of.items() if bits & bit)
        return found

    def categories(self, system: str | None, code: str | None) -> tuple[ChronicDisease, ...]:
        key = (system, code)
        found = self._seen.get(key)
        if found is None:
            found = self._categories(system, code)
            if len(self._seen) >= _SEEN_CODES:
                self._seen.clear()
            self._seen[key] = found
        return found

    def _categories(self, system: str | None, code: str | None) -> tuple[ChronicDisease, ...]:
        name = SYSTEMS.get(system or "")
        if name is None or not code:
            return ()
        code = _normal_code(code)
        found = list(self.exact.get((name, code), ()))
        for length, by_prefix in self._by_length.get(name, ()):
            if length > len(code):
                break
            found += by_prefix.get(code[:length], ())
        return tuple(found)


SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10-cm": "icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10": "icd-10-cm",
    "http://snomed.info/sct": "snomed-ct",
}


def _normal_code(code: str) -> str:
    """ICD-10-CM is written with or without its dot (E11.9, E119): compare without."""
    return code.strip().upper().replace(".", "")


@dataclass(frozen=True)
class Plan:
    """The plan's own choices: N and M (at most 3 and 8), and its per-drug cost estimate when there are no claims."""

    min_chronic_diseases: int = 3
    min_maintenance_drugs: int = 8
    cost_per_maintenance_drug: float | None = None
    """US dollars per drug per year; the year's threshold / 8 when not set."""


@dataclass(frozen=True, slots=True)
class ConditionFact:
    system: str | None
    code: str | None
    clinical_status: str


@dataclass(frozen=True, slots=True)
class MedicationFact:
    """A current order or list entry; `course_days` when the order says how long the course is."""

    key: str
    course_days: int | None = None


@dataclass(frozen=True, slots=True)
class FillFact:
    key: str
    filled_on: date
    days_supply: int
    total_cost: float | None = None


@dataclass(frozen=True, slots=True)
class CostFact:
    on: date
    amount: float


@dataclass(frozen=True)
class TargetingInput:
    """What targeting reads of one patient. A drug's `key` is its ingredient set (or its name when unresolved)."""

    conditions: Sequence[ConditionFact] = ()
    medications: Sequence[MedicationFact] = ()
    fills: Sequence[FillFact] = ()
    claims: Sequence[CostFact] = field(default=())
    drug_management_program_at_risk: bool = False


def drug_key(ingredients: Iterable[str], name: str) -> str:
    """One drug, however it is written: its ingredients joined, or its name when the vocabulary did not resolve it."""
    found = sorted(set(ingredients))
    return " / ".join(found) if found else name.strip().lower()


def determine(
    record: TargetingInput,
    *,
    as_of: date,
    tables: TargetingTables,
    plan: Plan | None = None,
    trigger: EvaluationTrigger = "quarterly",
    inputs_considered: int = 0,
) -> EligibilityDetermination:
    """Eligibility for the program year of `as_of`, with the figures and a sentence per criterion."""
    return screen(record, as_of=as_of, tables=tables, plan=plan).determination(trigger, inputs_considered)


def screen(record: TargetingInput, *, as_of: date, tables: TargetingTables, plan: Plan | None = None) -> Screening:
    """Whether the member is targeted for the program year of `as_of`, cheapest criterion first.

    The chronic diseases come from a few conditions, the drugs and the cost from a year of fills: a member short of
    the diseases (most of a plan), or with fewer drugs on the whole record than the plan requires, and not at risk
    is not targeted whatever the year's fills add up to, so those are read only when the determination is asked
    for. A sweep asks for it of the targeted members alone.
    """
    terms = tables.terms(as_of.year, plan or _DEFAULT_PLAN)
    diseases = chronic_diseases(record.conditions, tables)
    if not record.drug_management_program_at_risk and (
        len(diseases) < terms.criteria.min_chronic_diseases
        or _too_few_drugs(record, terms.criteria.min_maintenance_drugs)
    ):
        return Screening(record, as_of, terms, diseases, None, None)
    figures = _figures(record, as_of, terms)
    return Screening(
        record,
        as_of,
        terms,
        diseases,
        figures,
        _basis(terms, diseases, figures, record.drug_management_program_at_risk),
    )


def _too_few_drugs(record: TargetingInput, needed: int) -> bool:
    """Fewer distinct drugs ordered or filled ever than `needed`: no subset of them can be enough maintenance drugs."""
    keys = {m.key for m in record.medications}
    if len(keys) >= needed:
        return False
    keys.update(map(_KEY, record.fills))
    return len(keys) < needed


@dataclass(frozen=True, slots=True)
class _Terms:
    """A plan's criteria for one program year, checked and built once: every member of a sweep shares them."""

    plan: Plan
    criteria: TargetingCriteria
    per_drug: float


@dataclass(frozen=True, slots=True)
class _Figures:
    drugs: Set[str]
    annual_cost: float
    cost_basis: CostBasis


class Screening:
    """A member's targeting: `eligible` and `basis` at once, the determination (figures, sentences) on demand."""

    __slots__ = ("_as_of", "_diseases", "_figures", "_record", "_terms", "basis")

    def __init__(
        self,
        record: TargetingInput,
        as_of: date,
        terms: _Terms,
        diseases: tuple[ChronicDisease, ...],
        figures: _Figures | None,
        basis: TargetingBasis | None,
    ) -> None:
        self._record, self._as_of, self._terms, self._diseases = record, as_of, terms, diseases
        self._figures, self.basis = figures, basis

    @property
    def eligible(self) -> bool:
        return self.basis is not None

    def determination(
        self, trigger: EvaluationTrigger = "quarterly", inputs_considered: int = 0
    ) -> EligibilityDetermination:
        criteria = self._terms.criteria
        figures = self._figures or _figures(self._record, self._as_of, self._terms)
        drugs = tuple(sorted(figures.drugs))
        findings = TargetingFindings(
            chronic_diseases=self._diseases,
            maintenance_drugs=drugs,
            annual_cost=figures.annual_cost,
            cost_basis=figures.cost_basis,
            drug_management_program_at_risk=self._record.drug_management_program_at_risk,
            meets_chronic_diseases=len(self._diseases) >= criteria.min_chronic_diseases,
            meets_maintenance_drugs=len(drugs) >= criteria.min_maintenance_drugs,
            meets_annual_cost=figures.annual_cost >= criteria.annual_cost_threshold,
        )
        return EligibilityDetermination(
            program_year=criteria.program_year,
            determined_on=self._as_of,
            eligible=self.basis is not None,
            basis=self.basis,
            criteria=criteria,
            findings=findings,
            reasons=_reasons(criteria, findings, self._terms.per_drug),
            trigger=trigger,
            inputs_considered=inputs_considered,
        )


_DEFAULT_PLAN = Plan()
_KEY = attrgetter("key")


def _figures(record: TargetingInput, as_of: date, terms: _Terms) -> _Figures:
    last_year = _last_year(record, as_of)
    drugs = _maintenance_set(record, last_year.supplied)
    cost, basis = _cost(last_year, as_of, len(drugs), terms.per_drug)
    return _Figures(drugs, cost, basis)


def _basis(
    terms: _Terms, diseases: tuple[ChronicDisease, ...], figures: _Figures, at_risk: bool
) -> TargetingBasis | None:
    criteria = terms.criteria
    if (
        len(diseases) >= criteria.min_chronic_diseases
        and len(figures.drugs) >= criteria.min_maintenance_drugs
        and figures.annual_cost >= criteria.annual_cost_threshold
    ):
        return "chronic-diseases-drugs-cost"
    return "drug-management-program" if at_risk else None


def chronic_diseases(conditions: Iterable[ConditionFact], tables: TargetingTables) -> tuple[ChronicDisease, ...]:
    """Core chronic diseases of the active conditions; two codes of one disease count once."""
    bits = 0
    remembered = tables._bits.get
    for condition in conditions:
        if condition.clinical_status in ACTIVE_CONDITION:
            key = (condition.system, condition.code)
            found = remembered(key)
            bits |= tables._disease_bits(*key) if found is None else found
    found = tables._named.get(bits)
    return tables._diseases_of(bits) if found is None else found


def maintenance_drugs(record: TargetingInput, as_of: date) -> tuple[str, ...]:
    """Drugs in long-term use: current orders that are not short courses, and drugs filled for at least 28 days
    over the last year (two 10-day antibiotic courses are not maintenance; one 30-day statin fill is)."""
    return _maintenance(record, _last_year(record, as_of).supplied)


def annual_cost(record: TargetingInput, as_of: date, drug_count: int, per_drug: float) -> tuple[float, str]:
    """The likely annual drug cost: pharmacy claim totals of the last year, projected to a year when they span
    less; without any claim cost, the plan's estimate per maintenance drug."""
    return _cost(_last_year(record, as_of), as_of, drug_count, per_drug)


@dataclass(frozen=True, slots=True)
class _LastYear:
    supplied: dict[str, int]
    """Days supplied per drug."""
    amounts: list[float]
    """Claim costs, fills' then other claims', in record order."""
    first_cost_on: date | None


def _last_year(record: TargetingInput, as_of: date) -> _LastYear:
    # One pass over the fills serves both the maintenance drugs and the cost: a sweep spends most of its time here.
    since = as_of - timedelta(days=LOOKBACK_DAYS)
    supplied: dict[str, int] = {}
    amounts: list[float] = []
    first: date | None = None
    days_of = supplied.get
    for fill in record.fills:
        on = fill.filled_on
        if since < on <= as_of:
            key = fill.key
            supplied[key] = days_of(key, 0) + fill.days_supply
            cost = fill.total_cost
            if cost is not None:
                amounts.append(cost)
                if first is None or on < first:
                    first = on
    for claim in record.claims:
        on = claim.on
        if since < on <= as_of:
            amounts.append(claim.amount)
            if first is None or on < first:
                first = on
    return _LastYear(supplied, amounts, first)


def _maintenance(record: TargetingInput, supplied: Mapping[str, int]) -> tuple[str, ...]:
    return tuple(sorted(_maintenance_set(record, supplied)))


def _maintenance_set(record: TargetingInput, supplied: Mapping[str, int]) -> set[str]:
    drugs = {m.key for m in record.medications if m.course_days is None or m.course_days >= MAINTENANCE_MIN_DAYS}
    drugs.update(key for key, days in supplied.items() if days >= MAINTENANCE_MIN_DAYS)
    return drugs


def _cost(last_year: _LastYear, as_of: date, drug_count: int, per_drug: float) -> tuple[float, str]:
    if last_year.first_cost_on is None:
        return round(drug_count * per_drug, 2), "estimate"
    # sum() over the list, in record order, as before: the same float whatever the Python version's summation.
    total = sum(last_year.amounts)
    span = (as_of - last_year.first_cost_on).days + 1
    if span < LOOKBACK_DAYS:
        total = total * LOOKBACK_DAYS / max(span, MIN_PROJECTION_DAYS)
    return round(total, 2), "claims"


def _reasons(criteria: TargetingCriteria, findings: TargetingFindings, per_drug: float) -> tuple[str, ...]:
    if findings.cost_basis == "estimate":
        how = f"estimated at {_dollars(per_drug)} per maintenance drug, no pharmacy claim costs"
    else:
        how = "from pharmacy claim totals of the last 12 months"
    reasons = [
        _diseases_reason(findings.chronic_diseases, criteria.min_chronic_diseases),
        _drugs_reason(len(findings.maintenance_drugs), criteria.min_maintenance_drugs),
        f"likely annual drug cost {_dollars(findings.annual_cost)} ({how}); the {criteria.program_year} threshold is "
        f"{_dollars(criteria.annual_cost_threshold)}: {_met(findings.meets_annual_cost)}",
    ]
    if findings.drug_management_program_at_risk:
        reasons.append("at-risk beneficiary of a drug management program: eligible whatever the other criteria")
    return tuple(reasons)


# The first two sentences depend on a handful of values (at most 2^10 sets of diseases, a few drug counts): each is
# written once per process, not once per member.
@cache
def _diseases_reason(diseases: tuple[ChronicDisease, ...], required: int) -> str:
    named = ", ".join(_DISEASE_WORDS[d] for d in diseases) or "none"
    return (
        f"{len(diseases)} core chronic diseases ({named}); the plan requires {required}: "
        f"{_met(len(diseases) >= required)}"
    )


@cache
def _drugs_reason(count: int, required: int) -> str:
    return f"{count} maintenance drugs; the plan requires {required}: {_met(count >= required)}"


def _met(flag: bool) -> str:
    return "met" if flag else "not met"


def _dollars(amount: float) -> str:
    return f"${amount:,.2f}"
