"""Golden and negative cases for every DUR check kind."""

from __future__ import annotations

import pytest
from review.unit.dur_support import dosed, med, of_kind

from mtm.contracts import Allergy, Condition
from mtm.review.domain.dur import CheckedMedication, PatientContext, check
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit

KB = load_bundled()
ADULT = PatientContext(age_years=50, sex="male", weight_kg=80, egfr=90, serum_creatinine_mg_dl=1.0)
OLDER = PatientContext(age_years=78, sex="female", weight_kg=60, egfr=70, serum_creatinine_mg_dl=0.7)
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def _with(context: PatientContext, **changes: object) -> PatientContext:
    values = {
        "age_years": context.age_years,
        "sex": context.sex,
        "weight_kg": context.weight_kg,
        "egfr": context.egfr,
        "serum_creatinine_mg_dl": context.serum_creatinine_mg_dl,
        "conditions": context.conditions,
        "allergies": context.allergies,
        "pgx": dict(context.pgx),
        "hla": dict(context.hla),
    }
    values.update(changes)
    return PatientContext(**values)  # type: ignore[arg-type]


# --- common regimen -------------------------------------------------------------------------------------------


def test_common_well_chosen_regimen_has_no_moderate_or_high_alert() -> None:
    context = PatientContext(age_years=60, sex="male", weight_kg=85, egfr=85)
    medications = [
        dosed("lisinopril", 10),
        dosed("atorvastatin", 40),
        dosed("metformin", 2000, per_day=2),
        dosed("aspirin", 81),
    ]
    alerts = check(context, medications, KB)
    assert [alert for alert in alerts if alert.severity != "low"] == []
    assert all(alert.tier == "passive" for alert in alerts)


# --- interaction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "severity", "rule_id"),
    [
        ("warfarin", "ibuprofen", "high", "cur.anticoag.nsaid"),
        ("warfarin", "amiodarone", "high", "cur.warfarin.amiodarone"),
        ("warfarin", "fluconazole", "high", "cur.warfarin.fluconazole"),
        ("digoxin", "amiodarone", "high", "cur.digoxin.amiodarone"),
        ("lithium", "lisinopril", "moderate", "cur.lithium.acei"),
        ("oxycodone", "alprazolam", "high", "cur.opioid.benzodiazepine"),
        ("sertraline", "linezolid", "high", "lbl.sertraline.maoi"),
        ("clomipramine", "linezolid", "high", "cur.serotonin.maoi"),
        ("sildenafil", "isosorbide mononitrate", "high", "lbl.isosorbide_mononitrate.pde5"),
        ("clopidogrel", "omeprazole", "moderate", "lbl.clopidogrel.omeprazole"),
        ("spironolactone", "potassium chloride", "high", "cur.k.ksparing_ksupp"),
        ("colchicine", "clarithromycin", "high", "cur.colchicine.strong3a4"),
        ("simvastatin", "clarithromycin", "high", "lbl.simvastatin.strong_cyp3a4"),
        ("allopurinol", "azathioprine", "high", "cur.allopurinol.azathioprine"),
    ],
)
def test_curated_interaction(a: str, b: str, severity: str, rule_id: str) -> None:
    alerts = of_kind(check(ADULT, [med(a), med(b)], KB), "interaction")
    assert len(alerts) == 1
    assert (alerts[0].severity, alerts[0].rule_id) == (severity, rule_id)
    assert alerts[0].ingredients == tuple(sorted((a, b)))
    assert alerts[0].source


def test_va_critical_pair_is_high_with_international_names_mapped() -> None:
    # VA lists RIFAMPICIN/SIMVASTATIN; rifampin is the US name the engine receives.
    alerts = of_kind(check(ADULT, [med("rifampin"), med("simvastatin")], KB), "interaction")
    assert alerts and alerts[0].rule_id and alerts[0].rule_id.startswith("va.")


def test_combination_product_gives_one_interaction_alert_with_the_worst_rule() -> None:
    alerts = of_kind(
        check(ADULT, [med("methotrexate"), med("sulfamethoxazole", "trimethoprim", text="Bactrim DS")], KB),
        "interaction",
    )
    assert len(alerts) == 1
    assert alerts[0].severity == "high"
    assert alerts[0].ingredients == ("methotrexate", "sulfamethoxazole", "trimethoprim")


def test_no_twin_alerts_for_a_pair_in_either_order() -> None:
    medications = [med("warfarin"), med("ibuprofen"), med("ibuprofen", text="Advil"), med("amiodarone")]
    alerts = check(ADULT, medications, KB)
    keys = [(alert.kind, alert.ingredients) for alert in alerts if alert.kind != "unresolved"]
    assert len(keys) == len(set(keys))
    assert ("interaction", ("ibuprofen", "warfarin")) in keys
    reversed_order = check(ADULT, list(reversed(medications)), KB)
    assert [(a.kind, a.ingredients, a.rule_id) for a in reversed_order] == [
        (a.kind, a.ingredients, a.rule_id) for a in alerts
    ]


def test_ingredients_of_one_product_do_not_interact_with_each_other() -> None:
    alerts = check(ADULT, [med("sulfamethoxazole", "trimethoprim")], KB)
    assert of_kind(alerts, "interaction") == []


def test_unrelated_drugs_do_not_interact() -> None:
    assert of_kind(check(ADULT, [med("amlodipine"), med("levothyroxine")], KB), "interaction") == []


# --- duplication ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "rule_id", "severity"),
    [
        ("sertraline", "citalopram", "dup.ssri", "moderate"),
        ("ibuprofen", "naproxen", "dup.nsaid", "moderate"),
        ("omeprazole", "pantoprazole", "dup.ppi", "moderate"),
        ("atorvastatin", "simvastatin", "dup.statin", "moderate"),
        ("lisinopril", "losartan", "dup.acei_arb", "moderate"),
        ("warfarin", "apixaban", "dup.anticoagulant", "high"),
        ("lorazepam", "clonazepam", "dup.benzodiazepine", "moderate"),
        ("oxycodone", "morphine", "dup.opioid", "moderate"),
    ],
)
def test_class_duplication(first: str, second: str, rule_id: str, severity: str) -> None:
    alerts = of_kind(check(ADULT, [med(first), med(second)], KB), "duplication")
    assert [(alert.rule_id, alert.severity) for alert in alerts] == [(rule_id, severity)]


def test_same_ingredient_twice_is_one_duplication_alert() -> None:
    alerts = of_kind(
        check(ADULT, [med("acetaminophen", "hydrocodone"), med("acetaminophen", text="Tylenol 500 mg")], KB),
        "duplication",
    )
    assert [(alert.rule_id, alert.ingredients) for alert in alerts] == [("dup.same_ingredient", ("acetaminophen",))]


def test_three_ssris_give_one_alert_naming_all() -> None:
    alerts = of_kind(check(ADULT, [med("sertraline"), med("citalopram"), med("fluoxetine")], KB), "duplication")
    assert [alert.ingredients for alert in alerts] == [("citalopram", "fluoxetine", "sertraline")]


def test_different_classes_are_not_duplicates() -> None:
    assert of_kind(check(ADULT, [med("lisinopril"), med("amlodipine"), med("metformin")], KB), "duplication") == []


# --- dose -----------------------------------------------------------------------------------------------------


def test_methotrexate_daily_is_high() -> None:
    alerts = of_kind(check(ADULT, [dosed("methotrexate", 2.5, per_day=1)], KB), "dose")
    assert [(alert.severity, alert.rule_id) for alert in alerts] == [("high", "sched.methotrexate.weekly")]


def test_methotrexate_weekly_is_fine() -> None:
    assert of_kind(check(ADULT, [dosed("methotrexate", 15 / 7, per_day=1 / 7)], KB), "dose") == []


def test_alendronate_70_mg_daily_is_high_and_10_mg_daily_is_fine() -> None:
    assert of_kind(check(ADULT, [dosed("alendronate", 70, per_day=1)], KB), "dose")[0].severity == "high"
    assert of_kind(check(ADULT, [dosed("alendronate", 10, per_day=1)], KB), "dose") == []
    assert of_kind(check(ADULT, [dosed("alendronate", 10, per_day=1 / 7)], KB), "dose") == []


def test_acetaminophen_5_g_alerts_and_3_g_does_not() -> None:
    assert of_kind(check(ADULT, [dosed("acetaminophen", 5000, per_day=5)], KB), "dose")
    assert of_kind(check(ADULT, [dosed("acetaminophen", 3000, per_day=3)], KB), "dose") == []


def test_acetaminophen_sums_across_products_and_units() -> None:
    medications = [
        med("acetaminophen", "hydrocodone", daily={"acetaminophen": (2600, "mg"), "hydrocodone": (40, "mg")}),
        med("acetaminophen", daily={"acetaminophen": (2, "g")}),
    ]
    alerts = of_kind(check(ADULT, medications, KB), "dose")
    assert [alert.ingredients for alert in alerts] == [("acetaminophen",)]
    assert "4600 mg/day" in alerts[0].message


def test_missing_daily_amount_is_reported_not_silent() -> None:
    alerts = check(ADULT, [med("acetaminophen")], KB)
    unresolved = of_kind(alerts, "unresolved")
    assert len(unresolved) == 1 and "dose check could not run" in unresolved[0].message
    assert (unresolved[0].severity, unresolved[0].tier) == ("low", "passive")


# --- renal ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("egfr", "expected"),
    [(25, ("high", "renal.metformin.lt30")), (40, ("moderate", "renal.metformin.30_45")), (90, None)],
)
def test_metformin_by_egfr(egfr: float, expected: tuple[str, str] | None) -> None:
    alerts = of_kind(check(_with(ADULT, egfr=egfr), [dosed("metformin", 1000)], KB), "renal")
    assert [(alert.severity, alert.rule_id) for alert in alerts] == ([expected] if expected else [])


def test_cockcroft_gault_used_when_egfr_absent() -> None:
    context = PatientContext(age_years=85, sex="female", weight_kg=50, serum_creatinine_mg_dl=1.6)
    alerts = of_kind(check(context, [med("nitrofurantoin")], KB), "renal")
    assert alerts and "Cockcroft-Gault" in alerts[0].message


def test_renal_dose_band_respects_a_reduced_dose() -> None:
    context = _with(ADULT, serum_creatinine_mg_dl=2.5)  # CrCl 40 mL/min
    assert of_kind(check(context, [dosed("gabapentin", 900, per_day=3)], KB), "renal") == []
    assert of_kind(check(context, [dosed("gabapentin", 1800, per_day=3)], KB), "renal")


def test_label_by_crcl_uses_crcl_even_when_egfr_is_higher() -> None:
    # 88-year-old 45 kg woman: eGFR 48 but Cockcroft-Gault CrCl 25 mL/min; Pradaxa doses by CrCl.
    context = PatientContext(age_years=88, sex="female", weight_kg=45, egfr=48, serum_creatinine_mg_dl=1.1)
    alerts = of_kind(check(context, [dosed("dabigatran", 300, per_day=2)], KB), "renal")
    assert [alert.rule_id for alert in alerts] == ["renal.dabigatran.15_30"]
    assert "CrCl 25 mL/min (Cockcroft-Gault, actual body weight 45 kg)" in alerts[0].message
    # The eGFR-labelled rule for metformin uses the eGFR of the same patient (48: no alert below 45).
    assert of_kind(check(context, [dosed("metformin", 1000)], KB), "renal") == []


def test_egfr_is_computed_from_creatinine_when_not_measured() -> None:
    context = PatientContext(age_years=70, sex="male", weight_kg=80, serum_creatinine_mg_dl=2.5)
    alerts = of_kind(check(context, [dosed("metformin", 1000)], KB), "renal")
    assert [alert.rule_id for alert in alerts] == ["renal.metformin.lt30"]
    assert "CKD-EPI 2021" in alerts[0].message


def test_crcl_label_without_weight_gives_a_visible_could_not_check() -> None:
    context = PatientContext(age_years=88, sex="female", egfr=48, serum_creatinine_mg_dl=1.1)
    alerts = check(context, [dosed("dabigatran", 300, per_day=2)], KB)
    assert of_kind(alerts, "renal") == []
    notice = of_kind(alerts, "unresolved")
    assert notice and "creatinine clearance" in notice[0].message and "weight" in notice[0].message


def test_normal_kidneys_raise_no_renal_alert() -> None:
    medications = [med(name) for name in ("metformin", "dabigatran", "gabapentin", "ibuprofen", "spironolactone")]
    assert of_kind(check(_with(ADULT, egfr=90), medications, KB), "renal") == []


def test_renal_check_without_kidney_data_says_so() -> None:
    context = PatientContext(age_years=70)
    unresolved = of_kind(check(context, [dosed("metformin", 1000)], KB), "unresolved")
    assert unresolved and "renal check could not run" in unresolved[0].message


# --- condition ------------------------------------------------------------------------------------------------


def test_nsaid_in_heart_failure_by_snomed() -> None:
    context = _with(ADULT, conditions=(Condition(system=SNOMED, code="88805009", text="Chronic CHF"),))
    alerts = of_kind(check(context, [med("naproxen")], KB), "condition")
    assert [alert.rule_id for alert in alerts] == ["cond.nsaid.hf"]


def test_verapamil_in_hfref_by_icd10_keeps_the_higher_rule_only() -> None:
    context = _with(ADULT, conditions=(Condition(system=ICD10, code="I50.22", text="Chronic systolic heart failure"),))
    alerts = of_kind(check(context, [med("verapamil")], KB), "condition")
    # The HFrEF therapy reminders (start.hfref.*) are passive omissions, not rules about verapamil.
    rules = [(alert.rule_id, alert.severity) for alert in alerts if not (alert.rule_id or "").startswith("start.")]
    assert rules == [("cond.nondhp.hfref", "high")]


def test_peptic_ulcer_history_counts_when_resolved() -> None:
    ulcer = Condition(text="History of gastric ulcer", clinical_status="resolved")
    alerts = of_kind(check(_with(ADULT, conditions=(ulcer,)), [med("ibuprofen")], KB), "condition")
    assert alerts and "history of" in alerts[0].message


def test_resolved_heart_failure_does_not_count_and_unrelated_condition_is_silent() -> None:
    conditions = (
        Condition(text="Heart failure", clinical_status="resolved"),
        Condition(system=SNOMED, code="38341003", text="Hypertension"),
    )
    assert of_kind(check(_with(ADULT, conditions=conditions), [med("naproxen")], KB), "condition") == []


# --- allergy --------------------------------------------------------------------------------------------------


def _allergic(*texts: str) -> PatientContext:
    return _with(ADULT, allergies=tuple(Allergy(text=text, category="medication") for text in texts))


def test_same_ingredient_allergy_is_high() -> None:
    alerts = of_kind(check(_allergic("Sulfamethoxazole"), [med("sulfamethoxazole", "trimethoprim")], KB), "allergy")
    # The product's own label contraindication is kept over the generic same-ingredient rule.
    assert [(alert.ingredients, alert.severity, alert.rule_id) for alert in alerts] == [
        (("sulfamethoxazole",), "high", "lbl.smx_tmp.hypersensitivity")
    ]
    assert [a.rule_id for a in of_kind(check(_allergic("Trazodone"), [med("trazodone")], KB), "allergy")] == [
        "allergy.same_ingredient"
    ]


def test_penicillin_allergy_and_amoxicillin_is_high() -> None:
    alerts = of_kind(check(_allergic("Penicillin V"), [med("amoxicillin", "clavulanate")], KB), "allergy")
    assert [(alert.ingredients, alert.severity, alert.tier) for alert in alerts] == [
        (("amoxicillin",), "high", "interruptive")
    ]


def test_penicillin_allergy_and_cephalosporin_is_low_passive() -> None:
    alerts = of_kind(check(_allergic("PCN - hives"), [med("cephalexin")], KB), "allergy")
    assert [(alert.severity, alert.tier) for alert in alerts] == [("low", "passive")]


def test_sulfa_allergy_and_sulfamethoxazole_is_high_but_not_furosemide() -> None:
    alerts = check(_allergic("Sulfa drugs"), [med("sulfamethoxazole", "trimethoprim"), med("furosemide")], KB)
    assert [(alert.ingredients, alert.severity) for alert in of_kind(alerts, "allergy")] == [
        (("sulfamethoxazole",), "high")
    ]


def test_allergy_to_one_class_does_not_flag_an_unrelated_class() -> None:
    alerts = check(_allergic("Penicillin"), [med("azithromycin"), med("ciprofloxacin")], KB)
    assert of_kind(alerts, "allergy") == []


def test_food_allergy_does_not_flag_drugs() -> None:
    alerts = check(_allergic("Allergy to peanuts", "Shellfish allergy"), [med("amoxicillin"), med("aspirin")], KB)
    assert of_kind(alerts, "allergy") == []


# --- geriatric ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ingredient", "rule_id"),
    [
        ("diphenhydramine", "ger.antihistamine"),
        ("lorazepam", "ger.benzodiazepine"),
        ("zolpidem", "ger.zdrug"),
        ("glyburide", "ger.glyburide"),
        ("cyclobenzaprine", "ger.muscle_relaxant"),
        ("amitriptyline", "ger.anticholinergic_antidepressant"),
    ],
)
def test_geriatric_rule_fires_at_78(ingredient: str, rule_id: str) -> None:
    alerts = of_kind(check(OLDER, [med(ingredient)], KB), "geriatric")
    assert [(alert.rule_id, alert.tier) for alert in alerts] == [(rule_id, "passive")]
    assert alerts[0].severity in ("moderate", "low")


def test_fifty_year_old_is_not_flagged_geriatric() -> None:
    medications = [med("diphenhydramine"), med("lorazepam"), med("glyburide"), med("omeprazole")]
    assert of_kind(check(ADULT, medications, KB), "geriatric") == []


def test_digoxin_above_0125_mg_in_older_adult() -> None:
    assert of_kind(check(OLDER, [dosed("digoxin", 0.25)], KB), "geriatric")
    assert of_kind(check(OLDER, [dosed("digoxin", 125, unit="mcg")], KB), "geriatric") == []


def test_sliding_scale_insulin_by_text() -> None:
    medication = CheckedMedication(ingredients=("insulin lispro",), text="insulin lispro per sliding scale")
    alerts = of_kind(check(OLDER, [medication], KB), "geriatric")
    assert [alert.rule_id for alert in alerts] == ["ger.sliding_scale_insulin"]


# --- pharmacogenomic ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pgx", "hla", "ingredient", "severity"),
    [
        ({"CYP2C19": "Poor metabolizer"}, {}, "clopidogrel", "high"),
        ({"CYP2C19": "Intermediate Metabolizer"}, {}, "clopidogrel", "high"),
        ({"CYP2D6": "Ultrarapid metabolizer"}, {}, "codeine", "high"),
        ({"CYP2D6": "Poor metabolizer"}, {}, "tramadol", "high"),
        ({"SLCO1B1": "Decreased function"}, {}, "simvastatin", "high"),
        ({"TPMT": "Poor metabolizer"}, {}, "azathioprine", "high"),
        ({"DPYD": "Poor metabolizer"}, {}, "capecitabine", "high"),
        ({"G6PD": "Deficient"}, {}, "rasburicase", "high"),
        ({"CYP2C9": "Poor metabolizer"}, {}, "warfarin", "moderate"),
        ({"VKORC1": "-1639 AA"}, {}, "warfarin", "moderate"),
        ({"CYP2C19": "Poor metabolizer"}, {}, "citalopram", "moderate"),
        ({}, {"HLA-B*57:01": "Positive"}, "abacavir", "high"),
        ({}, {"HLA-B*15:02": "positive"}, "carbamazepine", "high"),
        ({}, {"HLA-A*31:01": "Detected"}, "carbamazepine", "high"),
        ({}, {"HLA-B*58:01": "positive"}, "allopurinol", "high"),
    ],
)
def test_pharmacogenomic_rule(pgx: dict[str, str], hla: dict[str, str], ingredient: str, severity: str) -> None:
    alerts = of_kind(check(_with(ADULT, pgx=pgx, hla=hla), [med(ingredient)], KB), "pharmacogenomic")
    assert [alert.severity for alert in alerts] == [severity]
    assert "CPIC" in alerts[0].source


@pytest.mark.parametrize(
    ("pgx", "hla", "ingredient"),
    [
        ({"CYP2C19": "Normal metabolizer"}, {}, "clopidogrel"),
        ({"CYP2D6": "Normal Metabolizer"}, {}, "codeine"),
        ({"SLCO1B1": "Normal function"}, {}, "simvastatin"),
        ({"TPMT": "Normal metabolizer"}, {}, "azathioprine"),
        ({}, {"HLA-B*57:01": "Negative"}, "abacavir"),
        ({"CYP2C19": "Poor metabolizer"}, {}, "atorvastatin"),
    ],
)
def test_normal_phenotype_or_unrelated_drug_never_fires(
    pgx: dict[str, str], hla: dict[str, str], ingredient: str
) -> None:
    assert of_kind(check(_with(ADULT, pgx=pgx, hla=hla), [med(ingredient)], KB), "pharmacogenomic") == []


# --- unresolved and ordering ----------------------------------------------------------------------------------


def test_unresolved_medication_is_never_silent() -> None:
    medication = CheckedMedication(ingredients=(), text="Grandma's heart pill", resolved=False)
    alerts = check(ADULT, [medication], KB)
    assert [(alert.kind, alert.severity, alert.tier) for alert in alerts] == [("unresolved", "low", "passive")]
    assert "Grandma's heart pill" in alerts[0].message and "interaction" in alerts[0].message


def test_alerts_are_ordered_by_severity_then_kind_then_ingredients() -> None:
    context = _with(OLDER, egfr=25, serum_creatinine_mg_dl=2.0, allergies=(Allergy(text="penicillin"),))
    medications = [
        med("warfarin"),
        med("ibuprofen"),
        med("amoxicillin"),
        med("diphenhydramine"),
        CheckedMedication(ingredients=(), text="?", resolved=False),
    ]
    alerts = check(context, medications, KB)
    rank = {"high": 0, "moderate": 1, "low": 2}
    keys = [(rank[alert.severity], alert.kind, alert.ingredients) for alert in alerts]
    assert keys == sorted(keys)
    assert alerts[0].severity == "high"
    assert check(context, medications, KB) == alerts
