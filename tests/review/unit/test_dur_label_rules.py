"""Tests generated from the label-cited, class-duplication and omission rows: each row fires on a case built from it
and stays silent on its negative."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from review.unit.dur_support import med
from support.knowledge import bundled_rows, token_reader

from mtm.contracts import Allergy, Condition
from mtm.contracts.clinical import Observation
from mtm.review.domain.dur import CheckedMedication, PatientContext, check
from mtm.review.domain.dur.knowledge_base import KnowledgeBase
from mtm.review.domain.dur.rules import ANY_ROUTE, SEVERITY_RANK, CodeSet
from mtm.review.knowledge import BUNDLED_DIRECTORY, load_bundled, read_tables
from mtm.review.knowledge.coverage import CORE_KINDS, coverage

pytestmark = pytest.mark.unit

KB = load_bundled()
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LABEL_TEXT = Path(__file__).resolve().parents[1] / "data" / "labels"
UNRELATED = "acetaminophen"


def _ids(rows: list[dict[str, str]]) -> list[str]:
    return [row["rule_id"] for row in rows]


def dosed(ingredient: str, daily: float, unit: str = "mg", route: str | None = "oral") -> CheckedMedication:
    return med(ingredient, daily={ingredient: (daily, unit)}, per_day=1, route=route)


def _condition_for(codes: CodeSet, status: str = "active") -> Condition | None:
    """A condition the codes match: an ICD-10-CM code, else a SNOMED code, else a keyword in the text."""
    if codes.icd10_prefixes:
        return Condition(system=ICD10, code=codes.icd10_prefixes[0], text="coded condition", clinical_status=status)
    if codes.snomed_codes:
        code = sorted(codes.snomed_codes)[0]
        return Condition(system=SNOMED, code=code, text="coded condition", clinical_status=status)
    if codes.keywords:
        return Condition(text=codes.keywords[0], clinical_status=status)
    return None


def _observations_for(codes: CodeSet) -> tuple[Observation, ...]:
    return tuple(
        Observation(code=code, text="state", value_text=sorted(answers)[0]) for code, answers in codes.answers[:1]
    )


def _age(min_age: int | None, max_age: int | None) -> int:
    if max_age is not None:
        return max(max_age - 1, min_age or 0)
    return max(min_age or 0, 50)


def _at_least_as_severe(alerts: list, kind: str, ingredient: str, severity: str) -> bool:
    return any(
        alert.kind == kind
        and ingredient in alert.ingredients
        and SEVERITY_RANK[alert.severity] <= SEVERITY_RANK[severity]
        for alert in alerts
    )


# --- citations -----------------------------------------------------------------------------------------------------


def test_no_shipped_row_lacks_its_citation_and_every_staged_label_is_accounted_for() -> None:
    report = coverage()
    assert report.problems == ()
    for drug in report.drugs:
        if drug.labels:
            assert all(drug.kinds[kind].status != "not-reviewed" for kind in CORE_KINDS), drug.name


CITED = ("label_interactions", "label_conditions", "label_renal", "label_dose_limits", "label_pair_dose_limits")


@pytest.mark.parametrize("table", (*CITED, "label_allergies", "label_pgx", "label_gaps"))
def test_every_quote_is_verbatim_in_the_label_section_it_cites(table: str) -> None:
    for row in bundled_rows(table):
        if not row["quote"]:
            continue
        label = json.loads((LABEL_TEXT / f"{row['label_set_id']}.json").read_text(encoding="utf-8"))
        section = " ".join(label["sections"][row["section"]].split())
        assert row["quote"] in section, (row.get("rule_id"), row["quote"])


def test_a_cited_row_without_a_section_does_not_load(tmp_path: Path) -> None:
    from mtm.review.domain.dur import KnowledgeBaseError
    from mtm.review.knowledge import load_from_directory

    for name in ("VERSION", "labels.csv", "classes.csv"):
        (tmp_path / name).write_bytes((BUNDLED_DIRECTORY / name).read_bytes())
    row = bundled_rows("label_interactions")[0]
    header = list(row)
    row["section"] = ""
    with (tmp_path / "label_interactions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerow(row)
    with pytest.raises(KnowledgeBaseError, match="section"):
        load_from_directory(tmp_path)


# --- interactions ----------------------------------------------------------------------------------------------------


def test_a_class_or_mechanism_label_row_never_lowers_what_a_third_party_list_rates_higher() -> None:
    """A `class:`/`role:` label row outranks the ONC non-interruptive and VA lists; where it covers a pair one of them
    rates more severe, it would silently downgrade that pair, so it must be at least as severe there."""
    tables = read_tables(BUNDLED_DIRECTORY)
    third_party = KnowledgeBase.from_tables(
        replace(tables, interactions_curated=(), label_interactions=(), onc_high_priority_pairs=())
    )
    broad = {
        row["rule_id"]
        for row in tables.label_interactions
        if "class:" in row["a"] + row["b"] or "role:" in row["a"] + row["b"]
    }
    lowered = [
        (sorted(pair), rule.rule_id, third_party.interactions[pair].rule_id)
        for pair, rule in KB.interactions.items()
        if rule.rule_id in broad
        and pair in third_party.interactions
        and SEVERITY_RANK[rule.severity] > SEVERITY_RANK[third_party.interactions[pair].severity]
    ]
    assert lowered == []


@pytest.mark.parametrize("row", bundled_rows("label_interactions"), ids=_ids(bundled_rows("label_interactions")))
def test_label_interaction_row(row: dict[str, str]) -> None:
    names = token_reader()
    pairs = {frozenset((a, b)) for a in names.expand(row["a"]) for b in names.expand(row["b"]) if a != b}
    assert pairs, "the row names no pair"
    won = sorted(sorted(pair) for pair in pairs if KB.interactions[pair].rule_id == row["rule_id"])
    for pair in pairs:  # where another rule covers the pair, it is more precise or more severe: it overrides
        chosen = KB.interactions[pair]
        if chosen.rule_id != row["rule_id"]:
            assert SEVERITY_RANK[chosen.severity] <= SEVERITY_RANK[row["severity"]] or chosen.precedence == 0, pair
    if not won:
        return
    a, b = won[0]
    alerts = check(PatientContext(age_years=50), [med(a), med(b)], KB)
    assert row["rule_id"] in {alert.rule_id for alert in alerts}
    bystander = UNRELATED if frozenset((a, UNRELATED)) not in KB.interactions else "zinc oxide"
    quiet = check(PatientContext(age_years=50), [med(a), med(bystander)], KB)
    assert row["rule_id"] not in {alert.rule_id for alert in quiet}


# --- conditions and populations --------------------------------------------------------------------------------------

CONDITION_ROWS = [rule for rules in KB.conditions.values() for rule in rules if rule.rule_id.startswith("lbl.")]


@pytest.mark.parametrize("rule", CONDITION_ROWS, ids=lambda rule: f"{rule.rule_id}-{rule.ingredient}")
def test_label_condition_row(rule) -> None:  # type: ignore[no-untyped-def]
    age = _age(rule.min_age, rule.max_age)
    sex = rule.sex or "female"
    route = rule.route if rule.route not in (None, ANY_ROUTE) else "oral"
    over = (rule.max_daily * 2, rule.unit) if rule.max_daily is not None and rule.unit else None
    medication = med(rule.ingredient, daily={rule.ingredient: over} if over else {}, per_day=1, route=route)
    condition = _condition_for(rule.codes)
    observations = _observations_for(rule.codes) if condition is None else ()
    context = PatientContext(
        age_years=age, sex=sex, conditions=(condition,) if condition else (), observations=observations
    )
    alerts = check(context, [medication], KB)
    assert rule.rule_id in {a.rule_id for a in alerts} or _at_least_as_severe(
        alerts, "condition", rule.ingredient, rule.severity
    )
    if condition is not None or observations:
        bare = check(PatientContext(age_years=age, sex=sex), [medication], KB)
        assert rule.rule_id not in {a.rule_id for a in bare}
    else:  # a population rule: outside its ages it is silent
        outside = (rule.max_age + 10) if rule.max_age is not None else max((rule.min_age or 1) - 10, 0)
        quiet = check(PatientContext(age_years=outside, sex=sex), [medication], KB)
        assert rule.rule_id not in {a.rule_id for a in quiet}
    if rule.max_daily is not None and rule.unit:
        within = med(rule.ingredient, daily={rule.ingredient: (rule.max_daily, rule.unit)}, per_day=1, route=route)
        assert rule.rule_id not in {a.rule_id for a in check(context, [within], KB)}
    exception = _condition_for(rule.unless)
    if exception is not None and condition is not None:
        excused = PatientContext(age_years=age, sex=sex, conditions=(condition, exception))
        assert rule.rule_id not in {a.rule_id for a in check(excused, [medication], KB)}


def test_resolved_history_counts_only_where_the_label_says_so() -> None:
    history = Condition(system=ICD10, code="Z86.718", text="History of DVT", clinical_status="resolved")
    pill = med("drospirenone", "ethinyl estradiol")
    assert "lbl.ethinyl_estradiol.vte" in {
        a.rule_id for a in check(PatientContext(age_years=30, sex="female", conditions=(history,)), [pill], KB)
    }
    resolved_failure = Condition(
        system=ICD10, code="I50.21", text="Acute systolic heart failure", clinical_status="resolved"
    )
    alerts = check(PatientContext(age_years=60, conditions=(resolved_failure,)), [med("metoprolol")], KB)
    assert "lbl.metoprolol.decompensated_hf" not in {a.rule_id for a in alerts}


def test_smoking_over_35_from_an_observation_and_a_condition() -> None:
    smoker = Observation(code="72166-2", text="Tobacco smoking status", value_text="Current every day smoker")
    former = Observation(code="72166-2", text="Tobacco smoking status", value_text="Former smoker")
    pill = med("ethinyl estradiol", "levonorgestrel")
    fired = check(PatientContext(age_years=38, sex="female", observations=(smoker,)), [pill], KB)
    assert "lbl.ethinyl_estradiol.smoker35" in {a.rule_id for a in fired}
    assert all(
        "lbl.ethinyl_estradiol.smoker35" != a.rule_id
        for a in check(PatientContext(age_years=30, sex="female", observations=(smoker,)), [pill], KB)
    )
    assert all(
        "lbl.ethinyl_estradiol.smoker35" != a.rule_id
        for a in check(PatientContext(age_years=38, sex="female", observations=(former,)), [pill], KB)
    )
    daily = Condition(system=SNOMED, code="449868002", text="Smokes tobacco daily")
    assert "lbl.ethinyl_estradiol.smoker35" in {
        a.rule_id for a in check(PatientContext(age_years=40, sex="female", conditions=(daily,)), [pill], KB)
    }


def test_pregnancy_from_the_latest_pregnancy_status() -> None:
    earlier = Observation(code="82810-3", text="Pregnancy status", value_text="Not pregnant")
    from datetime import UTC, datetime

    now = Observation(
        code="82810-3", text="Pregnancy status", value_text="Pregnant", effective=datetime(2024, 3, 1, tzinfo=UTC)
    )
    old = Observation(
        code="82810-3", text="Pregnancy status", value_text="Pregnant", effective=datetime(2023, 1, 1, tzinfo=UTC)
    )
    latest_not = Observation(
        code="82810-3", text="Pregnancy status", value_text="Not pregnant", effective=datetime(2024, 3, 1, tzinfo=UTC)
    )
    warfarin = [med("warfarin")]
    assert "lbl.warfarin.pregnancy" in {
        a.rule_id for a in check(PatientContext(age_years=30, sex="female", observations=(earlier, now)), warfarin, KB)
    }
    assert "lbl.warfarin.pregnancy" not in {
        a.rule_id
        for a in check(PatientContext(age_years=30, sex="female", observations=(old, latest_not)), warfarin, KB)
    }


# --- renal, dose limits, pair dose limits ------------------------------------------------------------------------


def _kidney(measure: str, value: float) -> PatientContext:
    """A 60-year-old 72 kg man whose Cockcroft-Gault CrCl (or measured eGFR) is `value`."""
    if measure == "egfr":
        return PatientContext(age_years=60, sex="male", weight_kg=72, egfr=value)
    return PatientContext(age_years=60, sex="male", weight_kg=72, serum_creatinine_mg_dl=80 / value)


RENAL_ROWS = [rule for rules in KB.renal.values() for rule in rules if rule.rule_id.startswith("lbl.")]


@pytest.mark.parametrize("rule", RENAL_ROWS, ids=lambda rule: f"{rule.rule_id}-{rule.ingredient}")
def test_label_renal_row(rule) -> None:  # type: ignore[no-untyped-def]
    low = rule.min_value if rule.min_value is not None else 0
    high = rule.max_value if rule.max_value is not None else low + 40
    inside = max((low + high) / 2, 1)
    dose = (rule.max_daily * 2, rule.unit) if rule.max_daily is not None and rule.unit else None
    medication = med(
        rule.ingredient, daily={rule.ingredient: dose} if dose else {}, per_day=1, route=rule.route or "oral"
    )
    alerts = check(_kidney(rule.measure, inside), [medication], KB)
    assert rule.rule_id in {a.rule_id for a in alerts} or _at_least_as_severe(
        alerts, "renal", rule.ingredient, rule.severity
    )
    outside = high + 40 if rule.max_value is not None else max(low - 5, 1)
    assert rule.rule_id not in {a.rule_id for a in check(_kidney(rule.measure, outside), [medication], KB)}


@pytest.mark.parametrize("row", bundled_rows("label_dose_limits"), ids=_ids(bundled_rows("label_dose_limits")))
def test_label_dose_limit_row(row: dict[str, str]) -> None:
    limit, unit, route = float(row["max_daily"]), row["unit"], row["route"] or "oral"
    over = check(PatientContext(age_years=50), [dosed(row["ingredient"], limit * 1.5, unit, route)], KB)
    assert row["rule_id"] in {a.rule_id for a in over}
    at_max = check(PatientContext(age_years=50), [dosed(row["ingredient"], limit, unit, route)], KB)
    assert row["rule_id"] not in {a.rule_id for a in at_max}


PAIR_ROWS = [rule for rules in KB.pair_dose_limits.values() for rule in rules]


@pytest.mark.parametrize("rule", PAIR_ROWS, ids=lambda rule: f"{rule.rule_id}-{rule.ingredient}")
def test_label_pair_dose_limit_row(rule) -> None:  # type: ignore[no-untyped-def]
    partner = sorted(rule.partners - {rule.ingredient})[0]
    context = PatientContext(age_years=50)
    over = check(context, [dosed(rule.ingredient, rule.max_daily * 2, rule.unit), med(partner)], KB)
    assert rule.rule_id in {a.rule_id for a in over}
    at_cap = check(context, [dosed(rule.ingredient, rule.max_daily, rule.unit), med(partner)], KB)
    assert rule.rule_id not in {a.rule_id for a in at_cap}
    alone = check(context, [dosed(rule.ingredient, rule.max_daily * 2, rule.unit)], KB)
    assert rule.rule_id not in {a.rule_id for a in alone}


def test_pair_dose_limit_without_a_dose_is_reported_not_silent() -> None:
    alerts = check(PatientContext(age_years=50), [med("simvastatin"), med("amlodipine")], KB)
    notice = next(a for a in alerts if a.rule_id == "unresolved.data")
    assert "interaction dose check could not run" in notice.message


# --- allergies -----------------------------------------------------------------------------------------------------

ALLERGY_ROWS = [rule for rules in KB.allergy_rules.values() for rule in rules if rule.ingredient is not None]


@pytest.mark.parametrize("rule", ALLERGY_ROWS, ids=lambda rule: f"{rule.rule_id}-{rule.ingredient}")
def test_label_allergy_row(rule) -> None:  # type: ignore[no-untyped-def]
    if rule.allergen_class == "same_ingredient":
        allergen = rule.ingredient
    elif rule.allergen_class.startswith("ingredient:"):
        allergen = rule.allergen_class.split(":", 1)[1]
    else:
        allergen = sorted(KB.class_members[rule.allergen_class] - {rule.ingredient})[0]
    alerts = check(PatientContext(allergies=(Allergy(text=allergen),)), [med(rule.ingredient)], KB)
    assert _at_least_as_severe(alerts, "allergy", rule.ingredient, rule.severity)
    quiet = check(PatientContext(allergies=(Allergy(text="Peanut"),)), [med(rule.ingredient)], KB)
    assert not [a for a in quiet if a.kind == "allergy"]


# --- class duplication -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [r for r in KB.duplication if r.class_a == r.class_b and r.class_a != "same_ingredient"],
    ids=lambda r: r.rule_id,
)
def test_class_duplication_row(rule) -> None:  # type: ignore[no-untyped-def]
    members = sorted(KB.class_members[rule.class_a])
    if rule.except_across:  # two from the same role duplicate; one from each role is a regimen
        role = sorted(KB.class_members[rule.except_across[-1]] & set(members))
        first, second = role[0], role[1]
        other = sorted(KB.class_members[rule.except_across[0]] & set(members))[0]
        regimen = check(PatientContext(age_years=60), [med(first), med(other)], KB)
        assert rule.rule_id not in {a.rule_id for a in regimen}
    else:
        first, second = members[0], members[1]
    alerts = check(PatientContext(age_years=60), [med(first), med(second)], KB)
    assert rule.rule_id in {a.rule_id for a in alerts}
    assert rule.rule_id not in {
        a.rule_id for a in check(PatientContext(age_years=60), [med(first), med(UNRELATED)], KB)
    }
    if rule.same_route:
        apart = check(PatientContext(age_years=60), [med(first, route="inhalation"), med(second, route="nasal")], KB)
        assert rule.rule_id not in {a.rule_id for a in apart}


# --- omissions --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", KB.omissions, ids=lambda rule: rule.rule_id)
def test_omission_row(rule) -> None:  # type: ignore[no-untyped-def]
    age = _age(rule.min_age, rule.max_age)
    condition = _condition_for(rule.codes)
    assert condition is not None
    context = PatientContext(age_years=age, sex="female", conditions=(condition,))
    assert rule.rule_id in {a.rule_id for a in check(context, [med(UNRELATED)], KB)}
    therapy = sorted(rule.therapy_ingredients)[0]
    assert rule.rule_id not in {a.rule_id for a in check(context, [med(therapy)], KB)}
    exception = _condition_for(rule.unless)
    if exception is not None:
        excused = PatientContext(age_years=age, sex="female", conditions=(condition, exception))
        assert rule.rule_id not in {a.rule_id for a in check(excused, [med(UNRELATED)], KB)}
    too_young = PatientContext(age_years=(rule.min_age or 1) - 1, sex="female", conditions=(condition,))
    if rule.min_age:
        assert rule.rule_id not in {a.rule_id for a in check(too_young, [med(UNRELATED)], KB)}


def test_omission_names_unresolved_medications() -> None:
    af = Condition(system=ICD10, code="I48.91", text="Atrial fibrillation")
    unknown = CheckedMedication(ingredients=(), text="Blood thinner (brand unknown)", resolved=False)
    alerts = check(PatientContext(age_years=80, conditions=(af,)), [unknown], KB)
    reminder = next(a for a in alerts if a.rule_id == "start.af.anticoagulant")
    assert reminder.severity == "low" and reminder.tier == "passive" and "could not be matched" in reminder.message


def test_omission_is_silent_for_a_resolved_condition_unless_history_counts() -> None:
    past_af = Condition(system=ICD10, code="I48.91", text="Atrial fibrillation", clinical_status="resolved")
    assert "start.af.anticoagulant" not in {
        a.rule_id for a in check(PatientContext(age_years=80, conditions=(past_af,)), [], KB)
    }
    past_mi = Condition(system=ICD10, code="I25.2", text="Old myocardial infarction", clinical_status="resolved")
    assert "start.ascvd.statin" in {
        a.rule_id for a in check(PatientContext(age_years=70, conditions=(past_mi,)), [], KB)
    }


def test_omission_value_sets_keep_look_alike_conditions_out() -> None:
    # Drug-induced parkinsonism is treated by stopping the culprit, and one gout flare is not recurrent gout.
    parkinsonism = Condition(system=ICD10, code="G21.11", text="Neuroleptic induced parkinsonism")
    single_flare = Condition(system=ICD10, code="M10.9", text="Gout, unspecified")
    alerts = check(PatientContext(age_years=80, conditions=(parkinsonism, single_flare)), [med("haloperidol")], KB)
    assert not [a.rule_id for a in alerts if a.rule_id.startswith(("start.parkinson", "start.gout"))]
    chronic = Condition(system=ICD10, code="M1A.071", text="Idiopathic chronic gout, right ankle")
    assert "start.gout.urate_lowering" in {
        a.rule_id for a in check(PatientContext(age_years=80, conditions=(chronic,)), [], KB)
    }


def test_a_known_dose_within_the_cap_silences_the_plain_pair_alert() -> None:
    within = check(PatientContext(age_years=70), [dosed("simvastatin", 10), dosed("amlodipine", 5)], KB)
    assert [a for a in within if a.kind == "interaction"] == []
    over = check(PatientContext(age_years=70), [dosed("simvastatin", 40), dosed("amlodipine", 5)], KB)
    assert [a.rule_id for a in over if a.kind == "interaction"] == ["lbl.simvastatin.cap20"]
    unknown = check(PatientContext(age_years=70), [med("simvastatin"), med("amlodipine")], KB)
    assert [a.rule_id for a in unknown if a.kind == "interaction"] == ["cur.simvastatin.amlodipine"]
