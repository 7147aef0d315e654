"""Golden and negative cases for each rule class of issue 12: each fires where its source says, and only there."""

from __future__ import annotations

import pytest
from review.unit.dur_support import dosed, med, of_kind

from mtm.contracts import Allergy, Condition
from mtm.review.domain.dur import CheckedMedication, PatientContext, check
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit

KB = load_bundled()
ADULT = PatientContext(age_years=45, sex="female", weight_kg=70, serum_creatinine_mg_dl=0.8)
OLD_MAN = PatientContext(age_years=78, sex="male", weight_kg=75, serum_creatinine_mg_dl=1.0)
OLD_WOMAN = PatientContext(age_years=78, sex="female", weight_kg=65, serum_creatinine_mg_dl=0.8)
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"


def _rules(context: PatientContext, medications: list[CheckedMedication], kind: str) -> list[tuple[str, str, str]]:
    return [(a.rule_id or "", a.severity, a.tier) for a in of_kind(check(context, medications, KB), kind)]


# --- interactions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "rule_id", "severity"),
    [
        ("trazodone", "phenelzine", "lbl.trazodone.maoi", "high"),
        ("mirtazapine", "linezolid", "lbl.mirtazapine.maoi", "high"),
        ("thioridazine", "terbinafine", "cur.thioridazine.cyp2d6", "high"),
        ("thioridazine", "paroxetine", "lbl.paroxetine.thioridazine_pimozide", "high"),
        ("warfarin", "phenytoin", "cur.warfarin.inducer", "moderate"),
        ("warfarin", "phenobarbital", "cur.warfarin.inducer", "moderate"),
        ("warfarin", "carbamazepine", "cur.warfarin.inducer", "moderate"),
        ("apixaban", "ketoconazole", "lbl.apixaban.pgp_cyp3a_inhibitor", "moderate"),
        ("apixaban", "itraconazole", "lbl.apixaban.pgp_cyp3a_inhibitor", "moderate"),
        ("rivaroxaban", "itraconazole", "cur.rivaroxaban.pgp_cyp3a4", "high"),
        ("disulfiram", "metronidazole", "cur.disulfiram.metronidazole", "high"),
        ("amiodarone", "levofloxacin", "cur.amiodarone.fluoroquinolone", "high"),
        ("warfarin", "sertraline", "cur.warfarin.ssri", "moderate"),
    ],
)
def test_interaction_class_fires(a: str, b: str, rule_id: str, severity: str) -> None:
    found = _rules(ADULT, [med(a), med(b)], "interaction")
    assert [(rule, sev) for rule, sev, _ in found] == [(rule_id, severity)]


def test_rifampin_with_warfarin_keeps_its_own_high_rule() -> None:
    assert _rules(ADULT, [med("warfarin"), med("rifampin")], "interaction")[0][1] == "high"


@pytest.mark.parametrize(
    ("a", "b"), [("bupropion", "sertraline"), ("thioridazine", "sertraline"), ("apixaban", "fluconazole")]
)
def test_interaction_classes_stay_quiet_outside_their_members(a: str, b: str) -> None:
    rules = [rule for rule, _, _ in _rules(ADULT, [med(a), med(b)], "interaction")]
    assert not any(rule.startswith(("cur.maoi", "cur.thioridazine.cyp2d6", "cur.apixaban")) for rule in rules)


# --- Beers combinations ---------------------------------------------------------------------------------------


def test_two_anticholinergics_in_an_older_adult() -> None:
    medications = [med("oxybutynin"), med("diphenhydramine")]
    assert ("beers.anticholinergic.2plus", "moderate", "passive") in _rules(OLD_MAN, medications, "geriatric")
    assert "beers.anticholinergic.2plus" not in {r for r, _, _ in _rules(ADULT, medications, "geriatric")}
    assert "beers.anticholinergic.2plus" not in {r for r, _, _ in _rules(OLD_MAN, medications[:1], "geriatric")}


def test_three_cns_active_drugs_but_not_two() -> None:
    three = [med("sertraline"), med("zolpidem"), med("oxycodone")]
    assert "beers.cns.3plus" in {r for r, _, _ in _rules(OLD_MAN, three, "geriatric")}
    assert "beers.cns.3plus" not in {r for r, _, _ in _rules(OLD_MAN, three[:2], "geriatric")}


def test_corticosteroid_with_nsaid_only_when_systemic() -> None:
    assert "beers.corticosteroid.nsaid" in {
        r for r, _, _ in _rules(OLD_MAN, [med("prednisone"), med("naproxen")], "geriatric")
    }
    topical = [med("hydrocortisone", route="topical"), med("naproxen")]
    assert "beers.corticosteroid.nsaid" not in {r for r, _, _ in _rules(OLD_MAN, topical, "geriatric")}


def test_alpha_blocker_with_loop_diuretic_in_older_women_only() -> None:
    medications = [med("doxazosin"), med("furosemide")]
    assert "beers.alpha1.loop.women" in {r for r, _, _ in _rules(OLD_WOMAN, medications, "geriatric")}
    assert "beers.alpha1.loop.women" not in {r for r, _, _ in _rules(OLD_MAN, medications, "geriatric")}


# --- drug-disease ---------------------------------------------------------------------------------------------


def test_estrogen_after_vte_by_its_label_on_every_route() -> None:
    history = Condition(system=ICD10, code="Z86.718", text="History of DVT", clinical_status="resolved")
    context = PatientContext(age_years=58, sex="female", conditions=(history,))
    # Estrogen labels contraindicate every route after a VTE; the label row is kept over the curated oral-only row.
    assert _rules(context, [med("estradiol")], "condition") == [("lbl.estradiol.vte", "high", "interruptive")]
    assert _rules(context, [med("estradiol", route="transdermal")], "condition") == [
        ("lbl.estradiol.vte", "high", "interruptive")
    ]
    assert _rules(PatientContext(age_years=58, sex="female"), [med("estradiol")], "condition") == []


def test_combined_contraceptive_with_migraine_with_aura() -> None:
    aura = Condition(text="Migraine with aura", code="G43.109", system=ICD10)
    context = PatientContext(age_years=28, sex="female", conditions=(aura,))
    pill = med("ethinyl estradiol", "levonorgestrel")
    assert ("cond.chc.migraine_aura", "high", "interruptive") in _rules(context, [pill], "condition")
    without_aura = PatientContext(age_years=28, sex="female", conditions=(Condition(text="Migraine", code="G43.009"),))
    assert _rules(without_aura, [pill], "condition") == []
    assert _rules(context, [med("norethindrone")], "condition") == []


def test_triptan_with_coronary_disease() -> None:
    context = PatientContext(
        age_years=60, conditions=(Condition(text="Coronary artery disease", code="I25.10", system=ICD10),)
    )
    rules = [rule for rule in _rules(context, [med("sumatriptan")], "condition") if not rule[0].startswith("start.")]
    # Sumatriptan's own label row wins over the triptan class row at equal severity (one rule per drug and condition).
    assert rules == [("lbl.sumatriptan.cad", "high", "interruptive")]
    assert _rules(ADULT, [med("sumatriptan")], "condition") == []


# --- allergy cross-reactivity ---------------------------------------------------------------------------------


def test_ace_inhibitor_angioedema_blocks_other_ace_inhibitors_and_sacubitril() -> None:
    context = PatientContext(allergies=(Allergy(text="Lisinopril (angioedema)"),))
    # The labels' own rows (angioedema with a previous ACE inhibitor) win over the class rule at equal severity.
    assert _rules(context, [med("enalapril")], "allergy") == [("lbl.enalapril.acei", "high", "interruptive")]
    assert _rules(context, [med("sacubitril", "valsartan")], "allergy") == [
        ("lbl.sacubitril.acei_angioedema", "high", "interruptive")
    ]
    assert _rules(context, [med("losartan")], "allergy") == []


def test_heparin_induced_thrombocytopenia_blocks_low_molecular_weight_heparins() -> None:
    for allergy in ("Heparin", "Heparin-induced thrombocytopenia"):
        context = PatientContext(allergies=(Allergy(text=allergy),))
        assert _rules(context, [med("enoxaparin", route="subcutaneous")], "allergy") == [
            ("allergy.heparin.lmwh", "high", "interruptive")
        ]
        assert _rules(context, [med("fondaparinux", route="subcutaneous")], "allergy") == []


# --- duplication ----------------------------------------------------------------------------------------------


def test_two_basal_insulins_are_a_duplication() -> None:
    medications = [med("insulin glargine", route="subcutaneous"), med("insulin detemir", route="subcutaneous")]
    assert ("dup.basal_insulin", "high", "interruptive") in _rules(ADULT, medications, "duplication")
    basal_bolus = [med("insulin glargine", route="subcutaneous"), med("insulin lispro", route="subcutaneous")]
    assert _rules(ADULT, basal_bolus, "duplication") == []


def test_nasal_and_inhaled_fluticasone_are_not_a_duplication() -> None:
    medications = [med("fluticasone", route="nasal"), med("fluticasone", "salmeterol", route="inhalation")]
    assert _rules(ADULT, medications, "duplication") == []
    same_route = [med("fluticasone", route="inhalation"), med("fluticasone", "salmeterol", route="inhalation")]
    assert [rule for rule, _, _ in _rules(ADULT, same_route, "duplication")] == ["dup.same_ingredient"]


# --- local routes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["ophthalmic", "otic", "topical"])
def test_a_locally_applied_product_does_not_meet_systemic_interaction_rules(route: str) -> None:
    """Ciprofloxacin eye or ear drops do not raise tizanidine levels; the tablet does (high, interruptive)."""
    assert _rules(ADULT, [med("ciprofloxacin", route=route), med("tizanidine")], "interaction") == []
    for systemic in ("oral", "intravenous", None):
        assert _rules(ADULT, [med("ciprofloxacin", route=systemic), med("tizanidine")], "interaction") == [
            ("lbl.ciprofloxacin.tizanidine", "high", "interruptive")
        ]


def test_a_local_product_routes_csv_names_as_systemic_still_interacts() -> None:
    """Sumatriptan nasal spray is a systemic triptan; fluticasone nasal spray is not a systemic corticosteroid."""
    assert _rules(ADULT, [med("sumatriptan", route="nasal"), med("sertraline")], "interaction") == [
        ("cur.serotonin.triptan", "low", "passive")
    ]
    # Both labels contraindicate the pair and outrank the curated PDE5/nitrate class row; one alert is raised.
    assert _rules(ADULT, [med("nitroglycerin", route="topical"), med("sildenafil")], "interaction") == [
        ("lbl.nitroglycerin.pde5", "high", "interruptive")
    ]
    assert KB.systemic("sumatriptan", "nasal") and not KB.systemic("fluticasone", "nasal")
    assert KB.systemic("ciprofloxacin", None) and KB.systemic("ciprofloxacin", "transdermal")


def test_cyclosporine_eye_drops_are_not_the_partner_of_a_dose_cap_or_a_contraindication() -> None:
    """Rosuvastatin is capped at 5 mg/day and simvastatin contraindicated with (systemic) cyclosporine."""
    rosuvastatin = med("rosuvastatin", daily={"rosuvastatin": (20, "mg")}, per_day=1)
    capped = [rule for rule, _, _ in _rules(ADULT, [rosuvastatin, med("cyclosporine")], "interaction")]
    assert "lbl.rosuvastatin.cap5.cyclosporine" in capped
    eye = [med("cyclosporine", route="ophthalmic")]
    assert _rules(ADULT, [rosuvastatin, *eye], "interaction") == []
    assert _rules(ADULT, [med("simvastatin"), *eye], "interaction") == []
    assert _rules(ADULT, [med("simvastatin"), med("cyclosporine")], "interaction")[0][1] == "high"


def test_drug_condition_rules_skip_eye_drops_unless_the_rule_holds_for_every_route() -> None:
    """Fluoroquinolone eye drops do not exacerbate myasthenia gravis as tablets do; ketorolac eye drops are not an
    NSAID in kidney disease; the topical fluorouracil label's pregnancy contraindication holds for the cream."""
    myasthenia = PatientContext(
        age_years=50, conditions=(Condition(system=ICD10, code="G70.00", text="Myasthenia gravis"),)
    )
    assert _rules(myasthenia, [med("ciprofloxacin", route="ophthalmic")], "condition") == []
    assert _rules(myasthenia, [med("ciprofloxacin")], "condition") == [("cond.fq.mg", "high", "interruptive")]
    ckd = PatientContext(age_years=50, conditions=(Condition(system=ICD10, code="N18.4", text="CKD stage 4"),))
    assert _rules(ckd, [med("ketorolac", route="ophthalmic")], "condition") == []
    assert ("cond.nsaid.ckd", "moderate", "passive") in _rules(ckd, [med("ketorolac")], "condition")
    pregnant = PatientContext(age_years=30, sex="female", conditions=(Condition(text="Pregnancy", code="Z33.1"),))
    for route in ("topical", "intravenous"):
        assert ("lbl.fluorouracil.pregnancy", "high", "interruptive") in _rules(
            pregnant, [med("fluorouracil", route=route)], "condition"
        ), route


def test_beers_rules_skip_eye_drops() -> None:
    """Beers lists atropine "excludes ophthalmic": atropine eye drops in an 80-year-old are not a geriatric alert."""
    older = PatientContext(age_years=80)
    assert _rules(older, [med("atropine", route="ophthalmic")], "geriatric") == []
    assert [rule for rule, _, _ in _rules(older, [med("atropine")], "geriatric")] == ["ger.antispasmodic"]


def test_duplication_compares_products_acting_at_the_same_place() -> None:
    """Oral and ophthalmic ciprofloxacin are not two fluoroquinolone courses; two fluoroquinolone eye drops are,
    and so are two oral ones."""
    apart = [med("ciprofloxacin", route="ophthalmic"), med("levofloxacin")]
    assert _rules(ADULT, apart, "duplication") == []
    assert _rules(ADULT, [med("ciprofloxacin", route="ophthalmic"), med("ciprofloxacin")], "duplication") == []
    eyes = [med("ciprofloxacin", route="ophthalmic"), med("levofloxacin", route="ophthalmic")]
    assert [rule for rule, _, _ in _rules(ADULT, eyes, "duplication")] == ["dup.fluoroquinolone"]
    oral = [med("ciprofloxacin"), med("levofloxacin")]
    assert [rule for rule, _, _ in _rules(ADULT, oral, "duplication")] == ["dup.fluoroquinolone"]
    # Timolol eye drops act systemically (routes.csv): with an oral beta-blocker they are a duplication.
    beta = [med("timolol", route="ophthalmic"), med("metoprolol")]
    assert [rule for rule, _, _ in _rules(ADULT, beta, "duplication")] == ["dup.beta_blocker"]


def test_class_combinations_count_only_systemic_exposure() -> None:
    """Two strong anticholinergics in an older adult, one of them as eye drops (atropine), are not Beers's
    anticholinergic burden; both by mouth they are."""
    older = PatientContext(age_years=80)
    eye = [med("atropine", route="ophthalmic"), med("oxybutynin")]
    assert "beers.anticholinergic.2plus" not in [rule for rule, _, _ in _rules(older, eye, "geriatric")]
    both = [med("hyoscyamine"), med("oxybutynin")]
    assert "beers.anticholinergic.2plus" in [rule for rule, _, _ in _rules(older, both, "geriatric")]


# --- pharmacodynamic classes: bleeding and hypotension --------------------------------------------------------


@pytest.mark.parametrize(
    ("effect", "first", "second", "rule_id"),
    [
        ("QT prolongation", "haloperidol", "ondansetron", "cur.qt.qt"),
        ("serotonin syndrome", "sertraline", "tramadol", "cur.serotonin.opioid"),
        ("CNS depression", "meclizine", "zolpidem", "lbl.meclizine.cns"),
        ("hyperkalaemia", "drospirenone", "lisinopril", "lbl.drospirenone.potassium"),
        ("bleeding", "naproxen", "clopidogrel", "lbl.nsaid.hemostasis"),
        ("hypotension", "doxazosin", "tadalafil", "lbl.alpha_blocker.pde5"),
    ],
)
def test_each_pharmacodynamic_class_pair_alerts(effect: str, first: str, second: str, rule_id: str) -> None:
    """One golden pair per pharmacodynamic effect the issue names (anticholinergic burden is a Beers combination)."""
    assert rule_id in [rule for rule, _, _ in _rules(ADULT, [med(first), med(second)], "interaction")], effect


def test_drugs_that_impair_hemostasis_alert_as_their_class_labeling_says() -> None:
    """NSAID with clopidogrel or an SSRI, SSRI with aspirin: low and passive (the labels say monitor); an explicit or
    more severe rule for the pair still wins (warfarin with an NSAID is high, with an SSRI moderate)."""
    assert _rules(ADULT, [med("naproxen"), med("clopidogrel")], "interaction") == [
        ("lbl.nsaid.hemostasis", "low", "passive")
    ]
    assert _rules(ADULT, [med("sertraline"), med("aspirin")], "interaction") == [
        ("lbl.ssri_snri.hemostasis", "low", "passive")
    ]
    assert _rules(ADULT, [med("warfarin"), med("naproxen")], "interaction") == [
        ("cur.anticoag.nsaid", "high", "interruptive")
    ]
    assert _rules(ADULT, [med("warfarin"), med("sertraline")], "interaction")[0][1] == "moderate"
    assert "bleeding_risk" in KB.classes_of["cilostazol"]
    # Not a hemostasis pair: an NSAID with an unrelated drug, an SSRI with an SNRI (serotonergic, not this rule).
    assert _rules(ADULT, [med("naproxen"), med("metformin")], "interaction") == []
    assert all(
        rule != "lbl.ssri_snri.hemostasis"
        for rule, _, _ in _rules(ADULT, [med("sertraline"), med("duloxetine")], "interaction")
    )


def test_a_vasodilator_with_orthostatic_hypotension_alerts() -> None:
    """STOPP K3: alpha-1 blockers, calcium channel blockers, long-acting nitrates, ACE inhibitors and ARBs with
    postural hypotension (coded or written); not metformin, nor without the condition."""
    coded = PatientContext(
        age_years=78, conditions=(Condition(system=ICD10, code="I95.1", text="Orthostatic hypotension"),)
    )
    written = PatientContext(age_years=78, conditions=(Condition(text="Postural hypotension with falls"),))
    for drug in ("doxazosin", "amlodipine", "isosorbide mononitrate", "lisinopril", "losartan"):
        for context in (coded, written):
            assert ("cond.vasodilator.orthostatic", "moderate", "passive") in _rules(context, [med(drug)], "condition")
    assert _rules(coded, [med("metformin")], "condition") == []
    assert _rules(PatientContext(age_years=78), [med("amlodipine")], "condition") == []


def test_vasodilator_pairs_the_labels_name_alert_for_hypotension() -> None:
    assert _rules(ADULT, [med("tamsulosin"), med("sildenafil")], "interaction") == [
        ("lbl.alpha_blocker.pde5", "moderate", "passive")
    ]
    assert _rules(ADULT, [med("isosorbide mononitrate"), med("amlodipine")], "interaction") == [
        ("lbl.nitrate.ccb", "low", "passive")
    ]
    # As-needed sublingual nitroglycerin with a calcium channel blocker is the usual angina regimen: silent.
    assert _rules(ADULT, [med("nitroglycerin", route="sublingual"), med("amlodipine")], "interaction") == []


# --- multi-criterion dose (apixaban) --------------------------------------------------------------------------


def test_apixaban_full_dose_with_two_reduction_criteria() -> None:
    context = PatientContext(age_years=84, sex="female", weight_kg=55, serum_creatinine_mg_dl=1.0)
    alerts = of_kind(check(context, [dosed("apixaban", 10, per_day=2)], KB), "dose")
    assert [(a.rule_id, a.severity) for a in alerts] == [("crit.apixaban.reduce", "high")]
    assert "2 of 3 criteria met (age years >= 80, weight kg <= 60)" in alerts[0].message
    assert of_kind(check(context, [dosed("apixaban", 5, per_day=2)], KB), "dose") == []


def test_apixaban_with_one_criterion_keeps_full_dose_and_flags_an_underdose() -> None:
    context = PatientContext(age_years=84, sex="male", weight_kg=80, serum_creatinine_mg_dl=1.0)
    assert of_kind(check(context, [dosed("apixaban", 10, per_day=2)], KB), "dose") == []
    low = of_kind(check(context, [dosed("apixaban", 5, per_day=2)], KB), "dose")
    assert [(a.rule_id, a.severity, a.tier) for a in low] == [("crit.apixaban.underdose", "low", "passive")]


def test_apixaban_criteria_that_cannot_be_evaluated_are_named() -> None:
    context = PatientContext(age_years=84, sex="female")  # no weight, no creatinine
    alerts = check(context, [dosed("apixaban", 10, per_day=2)], KB)
    assert of_kind(alerts, "dose") == []
    notice = of_kind(alerts, "unresolved")
    assert notice and "weight kg <= 60" in notice[0].message


# --- noise ----------------------------------------------------------------------------------------------------


def test_missing_doses_give_one_notice_per_patient() -> None:
    medications = [med("metformin"), med("atorvastatin"), med("lisinopril"), med("gabapentin")]
    notices = of_kind(check(ADULT, medications, KB), "unresolved")
    assert len(notices) == 1
    for name in ("metformin", "atorvastatin", "gabapentin"):
        assert f"'{name}'" in notices[0].message
