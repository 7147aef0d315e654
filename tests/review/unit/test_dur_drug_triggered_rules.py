"""Tests generated from the drug-triggered omission rows and the kidney-conditioned label interactions: each row fires
on a case built from it and stays silent on its negatives."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from review.unit.dur_support import med
from support.knowledge import bundled_rows

from mtm.contracts import Allergy, Condition, MedicationEntry, PatientDemographics
from mtm.contracts.events import ReconciledItem, Reconciliation
from mtm.review.domain.dur import CheckedMedication, PatientContext, check
from mtm.review.domain.dur.context import context_from_reconciliation
from mtm.review.domain.dur.knowledge_base import KnowledgeBase
from mtm.review.domain.dur.rules import CodeSet
from mtm.review.knowledge import BUNDLED_DIRECTORY, load_bundled, read_tables

pytestmark = pytest.mark.unit

KB = load_bundled()
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LABEL_TEXT = Path(__file__).resolve().parents[1] / "data" / "labels"
UNRELATED = "acetaminophen"


def _ids(rules: object) -> str:
    return str(getattr(rules, "rule_id", rules))


def _condition_for(codes: CodeSet) -> Condition | None:
    if codes.icd10_prefixes:
        return Condition(system=ICD10, code=codes.icd10_prefixes[0], text="coded condition")
    if codes.keywords:
        return Condition(text=codes.keywords[0])
    return None


def _fired(context: PatientContext, medications: list[CheckedMedication], kb: KnowledgeBase = KB) -> set[str]:
    return {alert.rule_id or "" for alert in check(context, medications, kb)}


# --- omissions triggered by a drug ---------------------------------------------------------------------------------


def test_every_drug_triggered_omission_is_low_passive_and_a_start_reminder() -> None:
    assert {rule.rule_id for rule in KB.drug_omissions} >= {
        "start.corticosteroid.bone_protection",
        "start.opioid.laxative",
        "start.methotrexate.folic_acid",
    }
    for rule in KB.drug_omissions:
        assert rule.rule_id.startswith("start.") and (rule.severity, rule.tier) == ("low", "passive")
        assert "STOPP/START v3" in rule.source and "START section" in rule.source


@pytest.mark.parametrize("rule", KB.drug_omissions, ids=_ids)
def test_drug_omission_row(rule) -> None:  # type: ignore[no-untyped-def]
    age = rule.min_age or 70
    context = PatientContext(age_years=age, sex="female")
    route = rule.routes[0] if rule.routes else "oral"
    for trigger in sorted(rule.trigger_ingredients):
        assert rule.rule_id in _fired(context, [med(trigger, route=route), med(UNRELATED)]), trigger
    trigger = sorted(rule.trigger_ingredients)[0]
    taken = med(trigger, route=route)
    for therapy in sorted(rule.therapy_ingredients):
        assert rule.rule_id not in _fired(context, [taken, med(therapy)]), therapy
    assert rule.rule_id not in _fired(context, [med(UNRELATED)])
    if rule.min_age:
        assert rule.rule_id not in _fired(PatientContext(age_years=rule.min_age - 1, sex="female"), [taken])
        assert rule.rule_id not in _fired(PatientContext(sex="female"), [taken])
    if rule.regular_only:
        as_needed = replace(taken, as_needed=True)
        assert rule.rule_id not in _fired(context, [as_needed])
    if rule.routes:
        assert rule.rule_id not in _fired(context, [med(trigger, route="inhalation")])
        assert rule.rule_id in _fired(context, [med(trigger, route=None)])  # an unknown route may be any
    exception = _condition_for(rule.unless)
    if exception is not None:
        assert rule.rule_id not in _fired(PatientContext(age_years=age, conditions=(exception,)), [taken])
    allergic = PatientContext(age_years=age, allergies=(Allergy(text=sorted(rule.therapy_ingredients)[0]),))
    if sorted(rule.therapy_ingredients)[0] in KB.known_ingredients:
        assert rule.rule_id not in _fired(allergic, [taken])


def test_route_decides_whether_a_corticosteroid_calls_for_bone_protection() -> None:
    old = PatientContext(age_years=78, sex="female")
    rule = "start.corticosteroid.bone_protection"
    assert rule in _fired(old, [med("prednisone", route="oral")])
    assert rule in _fired(old, [med("methylprednisolone", route="intravenous")])
    # Eye drops and skin creams act where applied; an inhaled or injected-into-a-joint steroid is not the criterion's.
    assert rule not in _fired(old, [med("dexamethasone", route="ophthalmic")])
    assert rule not in _fired(old, [med("triamcinolone", route="topical")])
    assert rule not in _fired(old, [med("triamcinolone", route="intra-articular")])
    # Hydrocortisone is mostly replacement in adrenal insufficiency, not the criterion's pharmacological dose.
    assert rule not in _fired(old, [med("hydrocortisone", route="oral")])
    replacement = Condition(system=ICD10, code="E27.1", text="Primary adrenocortical insufficiency")
    assert rule not in _fired(replace(old, conditions=(replacement,)), [med("prednisone", route="oral")])
    # Either vitamin D and calcium or an antiresorptive answers it.
    assert rule not in _fired(old, [med("prednisone"), med("calcium carbonate", "cholecalciferol")])
    assert rule not in _fired(old, [med("prednisone"), med("alendronate")])


def test_an_opioid_taken_as_needed_does_not_call_for_a_laxative() -> None:
    old = PatientContext(age_years=80)
    regular = med("acetaminophen", "hydrocodone", per_day=4)
    assert "start.opioid.laxative" in _fired(old, [regular])
    assert "start.opioid.laxative" not in _fired(old, [replace(regular, as_needed=True)])
    # One regular opioid is enough, whatever else is taken as needed.
    both = [replace(regular, as_needed=True), med("morphine", route="oral")]
    alert = next(a for a in check(old, both, KB) if a.rule_id == "start.opioid.laxative")
    assert alert.ingredients == ("morphine",) and alert.kind == "condition"
    # A fentanyl patch is systemic however the list records it; a remifentanil infusion belongs to anaesthesia.
    assert "start.opioid.laxative" in _fired(old, [med("fentanyl", route="topical")])
    assert "start.opioid.laxative" not in _fired(old, [med("remifentanil", route="intravenous")])
    assert "start.opioid.laxative" not in _fired(old, [regular, med("sennosides")])
    assert "start.opioid.laxative" not in _fired(PatientContext(age_years=50), [regular])


def test_intravenous_methotrexate_is_left_to_its_oncology_regimen() -> None:
    old = PatientContext(age_years=72)
    assert "start.methotrexate.folic_acid" in _fired(old, [med("methotrexate", route="oral")])
    assert "start.methotrexate.folic_acid" in _fired(old, [med("methotrexate", route="subcutaneous")])
    assert "start.methotrexate.folic_acid" not in _fired(old, [med("methotrexate", route="intravenous")])
    assert "start.methotrexate.folic_acid" not in _fired(old, [med("methotrexate"), med("leucovorin")])


def test_a_drug_triggered_reminder_names_unmatched_medications() -> None:
    unknown = CheckedMedication(ingredients=(), text="Stool softener (brand unknown)", resolved=False)
    alerts = check(PatientContext(age_years=80), [med("oxycodone"), unknown], KB)
    reminder = next(a for a in alerts if a.rule_id == "start.opioid.laxative")
    assert "could not be matched" in reminder.message and reminder.message.startswith("Oxycodone, no laxative")


def test_as_needed_comes_from_the_reconciled_entry() -> None:
    def reconciliation(as_needed: bool) -> Reconciliation:
        entry = MedicationEntry(text="Oxycodone 5 MG Oral Tablet", as_needed=as_needed)
        item = ReconciledItem(ingredients=("oxycodone",), status="continued", home=entry, discharge=entry)
        return Reconciliation(
            transition_event_id=uuid.uuid4(),
            patient=PatientDemographics(patient_id="p-1", birth_date=date(1950, 6, 1), sex="female"),
            items=(item,),
        )

    for as_needed in (True, False):
        _, medications = context_from_reconciliation(reconciliation(as_needed), today=date(2026, 11, 30))
        assert [m.as_needed for m in medications] == [as_needed]


# --- interactions conditioned on kidney function ---------------------------------------------------------------------


RENAL_PAIRS = [rule for rules in KB.renal_interactions.values() for rule in rules]


def test_every_quote_of_a_kidney_conditioned_row_is_verbatim_in_its_label() -> None:
    rows = bundled_rows("label_renal_interactions")
    assert rows
    for row in rows:
        label = json.loads((LABEL_TEXT / f"{row['label_set_id']}.json").read_text(encoding="utf-8"))
        assert row["quote"] in " ".join(label["sections"][row["section"]].split()), row["rule_id"]


def _with_crcl(value: float, sex: str = "male") -> PatientContext:
    """A 70-year-old man of 72 kg whose Cockcroft-Gault clearance is `value` mL/min."""
    return PatientContext(age_years=70, sex=sex, weight_kg=72, serum_creatinine_mg_dl=70 / value)


def _with_egfr(value: float) -> PatientContext:
    return PatientContext(age_years=70, sex="male", egfr=value)


@pytest.mark.parametrize("rule", RENAL_PAIRS, ids=_ids)
def test_kidney_conditioned_interaction_row(rule) -> None:  # type: ignore[no-untyped-def]
    at = _with_crcl if rule.measure == "crcl" else _with_egfr
    low = rule.min_value if rule.min_value is not None else 0
    high = rule.max_value if rule.max_value is not None else low + 60
    drug = med(rule.ingredient)
    for partner in sorted(rule.partners):
        alerts = check(at((low + high) / 2), [drug, med(partner)], KB)
        alert = next(a for a in alerts if a.rule_id == rule.rule_id)
        assert alert.kind == "interaction" and set(alert.ingredients) == {rule.ingredient, partner}
        assert "mL/min" in alert.message  # the measure and its value are stated
    partner = sorted(rule.partners)[0]
    if rule.max_value is not None:
        assert rule.rule_id not in _fired(at(rule.max_value + 20), [drug, med(partner)])
        assert rule.rule_id not in _fired(at(rule.max_value), [drug, med(partner)])  # the maximum is exclusive
    if rule.min_value:
        assert rule.rule_id not in _fired(at(rule.min_value / 2), [drug, med(partner)])
        assert rule.rule_id in _fired(at(rule.min_value), [drug, med(partner)])
    assert rule.rule_id not in _fired(at((low + high) / 2), [drug, med(UNRELATED)])
    unknown = check(PatientContext(age_years=70), [drug, med(partner)], KB)
    assert rule.rule_id not in {a.rule_id for a in unknown}
    notice = next(a for a in unknown if a.rule_id == "unresolved.data")
    assert "kidney-conditioned interaction check could not run" in notice.message and partner in notice.message


def test_a_kidney_conditioned_rule_replaces_a_plain_pair_rule_that_says_no_more() -> None:
    tables = read_tables(BUNDLED_DIRECTORY)

    def with_plain(severity: str) -> KnowledgeBase:
        plain = {
            "rule_id": "test.rivaroxaban.verapamil",
            "a": "rivaroxaban",
            "b": "verapamil",
            "severity": severity,
            "tier": "passive",
            "message": "plain pair",
            "source": "test",
        }
        return KnowledgeBase.from_tables(replace(tables, interactions_curated=(*tables.interactions_curated, plain)))

    pair = [med("rivaroxaban"), med("verapamil")]
    milder = with_plain("low")
    assert [a.rule_id for a in check(_with_crcl(50), pair, milder) if a.kind == "interaction"] == [
        "lbl.rivaroxaban.pgp_moderate_cyp3a_inhibitor.crcl15_80"
    ]
    assert [a.rule_id for a in check(_with_crcl(100), pair, milder) if a.kind == "interaction"] == [
        "test.rivaroxaban.verapamil"
    ]
    graver = with_plain("high")
    assert sorted(a.rule_id for a in check(_with_crcl(50), pair, graver) if a.kind == "interaction") == [
        "lbl.rivaroxaban.pgp_moderate_cyp3a_inhibitor.crcl15_80",
        "test.rivaroxaban.verapamil",
    ]


def test_rivaroxaban_with_erythromycin_follows_the_label_range() -> None:
    pair = [med("rivaroxaban"), med("erythromycin")]
    rule = "lbl.rivaroxaban.pgp_moderate_cyp3a_inhibitor.crcl15_80"
    assert rule in _fired(_with_crcl(60), pair)
    assert rule in _fired(_with_crcl(60, sex="female"), pair)
    assert rule not in _fired(_with_crcl(95), pair)
    assert rule not in _fired(_with_crcl(10), pair)  # below 15 the renal rule says avoid rivaroxaban altogether
    assert any(a.kind == "renal" and a.severity == "high" for a in check(_with_crcl(10), pair, KB))
    # Erythromycin eye ointment does not reach rivaroxaban.
    assert rule not in _fired(_with_crcl(60), [med("rivaroxaban"), med("erythromycin", route="ophthalmic")])
    # A combined P-gp and strong CYP3A inhibitor is another rule, whatever the kidney function.
    strong = check(_with_crcl(95), [med("rivaroxaban"), med("ketoconazole")], KB)
    assert [a.severity for a in strong if a.kind == "interaction"] in (["moderate"], ["high"])
