"""Text and RxNorm-code resolution: the must-resolve examples, salts, combinations and refusals."""

import pytest

from mtm.drugs import Component, Resolution, resolve

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("brand", "ingredients"),
    [
        ("Lipitor", ("atorvastatin",)),
        ("Viagra", ("sildenafil",)),
        ("Ambien", ("zolpidem",)),
        ("Coumadin", ("warfarin",)),
        ("Zocor", ("simvastatin",)),
        ("Plavix", ("clopidogrel",)),
        ("Eliquis", ("apixaban",)),
        ("Xarelto", ("rivaroxaban",)),
        ("Lasix", ("furosemide",)),
        ("Norvasc", ("amlodipine",)),
        ("Glucophage", ("metformin",)),
        ("Synthroid", ("levothyroxine",)),
        ("Prilosec", ("omeprazole",)),
        ("Nexium", ("esomeprazole",)),
        ("Zoloft", ("sertraline",)),
        ("Prozac", ("fluoxetine",)),
        ("Lexapro", ("escitalopram",)),
        ("Tylenol", ("acetaminophen",)),
        ("Advil", ("ibuprofen",)),
        ("Motrin", ("ibuprofen",)),
        ("Aleve", ("naproxen",)),
        ("Cozaar", ("losartan",)),
        ("Zestril", ("lisinopril",)),
        ("Prinivil", ("lisinopril",)),
        ("Augmentin", ("amoxicillin", "clavulanate")),
        ("Bactrim", ("sulfamethoxazole", "trimethoprim")),
        ("Percocet", ("acetaminophen", "oxycodone")),
        ("Vicodin", ("acetaminophen", "hydrocodone")),
        ("Norco", ("acetaminophen", "hydrocodone")),
        ("Xanax", ("alprazolam",)),
        ("Valium", ("diazepam",)),
        ("Klonopin", ("clonazepam",)),
        ("Ativan", ("lorazepam",)),
        ("Lanoxin", ("digoxin",)),
        ("Zyloprim", ("allopurinol",)),
        ("Flomax", ("tamsulosin",)),
        ("Januvia", ("sitagliptin",)),
        ("Jardiance", ("empagliflozin",)),
        ("Farxiga", ("dapagliflozin",)),
        ("Entresto", ("sacubitril", "valsartan")),
        ("Cialis", ("tadalafil",)),
        ("Levitra", ("vardenafil",)),
        ("Imdur", ("isosorbide mononitrate",)),
        ("Nitrostat", ("nitroglycerin",)),
        ("Seroquel", ("quetiapine",)),
        ("Zyprexa", ("olanzapine",)),
        ("Risperdal", ("risperidone",)),
        ("Haldol", ("haloperidol",)),
        ("Deltasone", ("prednisone",)),
        ("Medrol", ("methylprednisolone",)),
        ("Singulair", ("montelukast",)),
        ("Ventolin", ("albuterol",)),
        ("ProAir", ("albuterol",)),
        ("Spiriva", ("tiotropium",)),
        ("Neurontin", ("gabapentin",)),
        ("Lyrica", ("pregabalin",)),
        ("Ultram", ("tramadol",)),
        ("OxyContin", ("oxycodone",)),
        ("Dilaudid", ("hydromorphone",)),
        ("Zithromax", ("azithromycin",)),
        ("Cipro", ("ciprofloxacin",)),
        ("Levaquin", ("levofloxacin",)),
        ("Diflucan", ("fluconazole",)),
        ("Tegretol", ("carbamazepine",)),
        ("Dilantin", ("phenytoin",)),
        ("Depakote", ("valproic acid",)),
        ("Keppra", ("levetiracetam",)),
        ("Lamictal", ("lamotrigine",)),
        ("Aricept", ("donepezil",)),
        ("Namenda", ("memantine",)),
        ("Protonix", ("pantoprazole",)),
        ("Pepcid", ("famotidine",)),
        ("Zantac", ("ranitidine",)),
        ("Benadryl", ("diphenhydramine",)),
        ("Atarax", ("hydroxyzine",)),
        ("Flexeril", ("cyclobenzaprine",)),
        ("Soma", ("carisoprodol",)),
        ("Lithobid", ("lithium carbonate",)),
        ("Trexall", ("methotrexate",)),
        ("Colcrys", ("colchicine",)),
        ("Amiodarone", ("amiodarone",)),
        ("Cordarone", ("amiodarone",)),
        ("Pacerone", ("amiodarone",)),
        ("Multaq", ("dronedarone",)),
        ("Tikosyn", ("dofetilide",)),
        ("Betapace", ("sotalol",)),
        ("Advair", ("fluticasone", "salmeterol")),
        ("Eliquis 5 mg tablet", ("apixaban",)),
    ],
)
def test_brand_names_resolve_to_their_ingredients(brand: str, ingredients: tuple[str, ...]) -> None:
    resolution = resolve(brand)
    assert resolution.ingredients == ingredients
    assert resolution.matched_by == "text"


def test_brand_sets_brand_field() -> None:
    assert resolve("Lipitor").brand == "lipitor"
    assert resolve("atorvastatin").brand is None


def test_toprol_xl_is_extended_release_metoprolol_succinate() -> None:
    resolution = resolve("Toprol XL")
    assert resolution.components == (Component("metoprolol", salt="succinate"),)
    assert resolution.release == "extended-release"
    assert resolution.brand == "toprol xl"


def test_lopressor_is_metoprolol_tartrate_immediate_release() -> None:
    resolution = resolve("Lopressor")
    assert resolution.components == (Component("metoprolol", salt="tartrate"),)
    assert resolution.release is None


def test_rxnorm_name_with_strength_form_and_route() -> None:
    resolution = resolve("Simvastatin 40 MG Oral Tablet")
    assert resolution == Resolution(
        ingredients=("simvastatin",),
        components=(Component("simvastatin", strength=40.0, unit="mg"),),
        dose_form="tablet",
        route_hint="oral",
        matched_by="text",
    )
    assert resolution.resolved


def test_synthea_misspelling_resolves() -> None:
    resolution = resolve("Simvistatin 10 MG")
    assert resolution.components == (Component("simvastatin", strength=10.0, unit="mg"),)


@pytest.mark.parametrize(
    ("text", "ingredient", "salt"),
    [
        ("metoprolol tartrate", "metoprolol", "tartrate"),
        ("metoprolol succinate ER", "metoprolol", "succinate"),
        ("losartan potassium", "losartan", "potassium"),
        ("Naproxen sodium 220 MG Oral Tablet", "naproxen", "sodium"),
        ("Penicillin V Potassium 500 MG Oral Tablet", "penicillin v", "potassium"),
        ("Amlodipine besylate", "amlodipine", "besylate"),
        ("sertraline hydrochloride", "sertraline", "hydrochloride"),
        ("levothyroxine sodium", "levothyroxine", "sodium"),
        ("clopidogrel bisulfate", "clopidogrel", "bisulfate"),
        ("3 ML Amiodarone hydrocholoride 50 MG/ML Prefilled Syringe", "amiodarone", "hydrochloride"),
    ],
)
def test_salts_are_split_from_the_ingredient(text: str, ingredient: str, salt: str) -> None:
    resolution = resolve(text)
    assert resolution.ingredients == (ingredient,)
    assert resolution.components[0].salt == salt


def test_metoprolol_succinate_er_is_extended_release() -> None:
    assert resolve("metoprolol succinate ER").release == "extended-release"


@pytest.mark.parametrize(
    "text",
    ["potassium chloride", "magnesium oxide", "ferrous sulfate", "calcium carbonate", "sodium bicarbonate"],
)
def test_salts_that_are_the_ingredient_are_kept_whole(text: str) -> None:
    resolution = resolve(text)
    assert resolution.components == (Component(text),)


def test_strength_is_kept_on_a_whole_salt_ingredient() -> None:
    assert resolve("Potassium Chloride 20 MEQ Extended Release Oral Tablet").components == (
        Component("potassium chloride", strength=20.0, unit="meq"),
    )


def test_sulfamethoxazole_trimethoprim_combination() -> None:
    resolution = resolve("Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet")
    assert resolution.components == (
        Component("sulfamethoxazole", strength=800.0, unit="mg"),
        Component("trimethoprim", strength=160.0, unit="mg"),
    )


def test_acetaminophen_codeine_phosphate_combination() -> None:
    resolution = resolve("Acetaminophen 300 MG / Codeine Phosphate 30 MG Oral Tablet")
    assert resolution.ingredients == ("acetaminophen", "codeine")
    assert resolution.components[1] == Component("codeine", salt="phosphate", strength=30.0, unit="mg")


def test_amoxicillin_clavulanate_combination() -> None:
    resolution = resolve("Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet")
    assert resolution.components == (
        Component("amoxicillin", strength=250.0, unit="mg"),
        Component("clavulanate", strength=125.0, unit="mg"),
    )


def test_components_are_sorted_alphabetically() -> None:
    resolution = resolve("Hydrochlorothiazide 12.5 MG / Lisinopril 10 MG Oral Tablet")
    assert resolution.components == (
        Component("hydrochlorothiazide", strength=12.5, unit="mg"),
        Component("lisinopril", strength=10.0, unit="mg"),
    )
    assert resolve("Lisinopril 10 MG / Hydrochlorothiazide 12.5 MG").ingredients == resolution.ingredients


def test_extended_release_metformin() -> None:
    resolution = resolve("24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet")
    assert resolution.components == (Component("metformin", "hydrochloride", 500.0, "mg"),)
    assert resolution.release == "extended-release"
    assert (resolution.dose_form, resolution.route_hint) == ("tablet", "oral")


def test_epinephrine_auto_injector_concentration() -> None:
    resolution = resolve("1 ML Epinephrine 1 MG/ML Auto-Injector")
    assert resolution.components == (Component("epinephrine", None, 1.0, "mg/ml", 1.0),)
    assert resolution.dose_form == "injection"


def test_albuterol_metered_dose_inhaler() -> None:
    resolution = resolve("NDA020503 200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler")
    assert resolution.components == (Component("albuterol", None, 0.09, "mg/actuat"),)
    assert (resolution.dose_form, resolution.route_hint) == ("inhaler", "inhalation")


def test_fluticasone_salmeterol_dry_powder_inhaler() -> None:
    text = "Fluticasone propionate 0.05 MG/ACTUAT / salmeterol 0.025 MG/ACTUAT Dry Powder Inhaler"
    resolution = resolve(text)
    assert resolution.components == (
        Component("fluticasone", "propionate", 0.05, "mg/actuat"),
        Component("salmeterol", None, 0.025, "mg/actuat"),
    )
    assert resolution.route_hint == "inhalation"


def test_liquid_strength_per_volume_is_normalized_to_one_ml() -> None:
    resolution = resolve("Amoxicillin 250 MG per 5 ML Oral Suspension")
    assert resolution.components == (Component("amoxicillin", None, 50.0, "mg/ml", 5.0),)
    assert resolve("amoxicillin 250mg/5ml suspension").components == resolution.components


def test_microgram_strength_is_converted_to_mg() -> None:
    assert resolve("levothyroxine 75 mcg tablet").components == (Component("levothyroxine", None, 0.075, "mg"),)
    assert resolve("Levothyroxine Sodium 0.075 MG Oral Tablet").components[0].strength == 0.075


@pytest.mark.parametrize(
    ("text", "ingredient"),
    [
        ("warfarin", "warfarin"),
        ("Aspirin", "aspirin"),
        ("ASA", "aspirin"),
        ("APAP", "acetaminophen"),
        ("HCTZ", "hydrochlorothiazide"),
        ("paracetamol", "acetaminophen"),
        ("salbutamol", "albuterol"),
        ("frusemide", "furosemide"),
        ("glyceryl trinitrate", "nitroglycerin"),
        ("adrenaline", "epinephrine"),
        ("KCl 20 mEq", "potassium chloride"),
        ("Vitamin B 12 5 MG/ML Injectable Solution", "cyanocobalamin"),
        ("Alendronic acid 10 MG Oral Tablet", "alendronate"),
        ("heparin sodium, porcine", "heparin"),
    ],
)
def test_bare_international_and_abbreviated_names(text: str, ingredient: str) -> None:
    assert resolve(text).ingredients == (ingredient,)


@pytest.mark.parametrize(
    ("text", "ingredient"),
    [("Lisinoprl 10 mg", "lisinopril"), ("atorvastatn", "atorvastatin"), ("metforminn", "metformin")],
)
def test_single_typo_on_a_long_name_is_tolerated(text: str, ingredient: str) -> None:
    assert resolve(text).ingredients == (ingredient,)


@pytest.mark.parametrize(
    "text",
    [
        "Blue pill",
        "",
        "   ",
        "xyz 10 mg",
        "10 mg",
        "Tylenol #5",
        "insulin",
        "Pamprin Max Formula",
        "aspirin and mystery herb",
        "water pill",
        "lisnpril",
        "Zestr",
    ],
)
def test_non_drug_or_partly_unknown_text_is_unresolved(text: str) -> None:
    # "Tylenol #5" does not exist: a numbered product is never read as its base brand (that would drop codeine).
    resolution = resolve(text)
    assert resolution.ingredients == ()
    assert resolution.components == ()
    assert not resolution.resolved
    assert resolution.matched_by is None


def test_short_words_are_never_fuzzy_matched() -> None:
    assert not resolve("aspirn").resolved
    assert not resolve("asprin").resolved


def test_multi_ingredient_brand_does_not_assign_an_ambiguous_strength() -> None:
    resolution = resolve("Percocet 5/325")
    assert resolution.ingredients == ("acetaminophen", "oxycodone")
    assert all(component.strength is None for component in resolution.components)


def test_single_ingredient_brand_takes_the_strength() -> None:
    assert resolve("Lasix 40mg").components == (Component("furosemide", None, 40.0, "mg"),)


def test_free_text_sig_words_are_ignored() -> None:
    resolution = resolve("warfarin 5 mg po daily")
    assert resolution.components == (Component("warfarin", None, 5.0, "mg"),)
    assert resolution.route_hint == "oral"


def test_generic_combination_names_and_connectors() -> None:
    assert resolve("co-trimoxazole").ingredients == ("sulfamethoxazole", "trimethoprim")
    assert resolve("amoxicillin and clavulanate").ingredients == ("amoxicillin", "clavulanate")
    assert resolve("Acetaminophen/Hydrocodone").ingredients == ("acetaminophen", "hydrocodone")
    assert resolve("Tylenol with Codeine").ingredients == ("acetaminophen", "codeine")


def test_bracketed_rxnorm_brand_is_recorded() -> None:
    resolution = resolve("24 HR metoprolol succinate 100 MG Extended Release Oral Tablet [Toprol]")
    assert resolution.brand == "toprol"
    assert resolution.components == (Component("metoprolol", "succinate", 100.0, "mg"),)
    assert resolve("Carbamazepine[Tegretol]").ingredients == ("carbamazepine",)


def test_rxnorm_code_decides_ingredients() -> None:
    resolution = resolve("", rxnorm_code="866414")
    assert resolution.ingredients == ("metoprolol",)
    assert resolution.matched_by == "rxnorm"
    assert resolution.release == "extended-release"


def test_rxnorm_code_wins_over_conflicting_text() -> None:
    resolution = resolve("some free text", rxnorm_code="313782")
    assert resolution.ingredients == ("acetaminophen",)
    assert resolution.matched_by == "rxnorm"


def test_rxnorm_ingredient_code_from_cpic() -> None:
    assert resolve("", rxnorm_code="11289").ingredients == ("warfarin",)


def test_unknown_rxnorm_code_falls_back_to_text() -> None:
    resolution = resolve("Zocor 20 mg", rxnorm_code="999999999")
    assert resolution.ingredients == ("simvastatin",)
    assert resolution.matched_by == "text"


def test_resolution_is_frozen() -> None:
    resolution = resolve("warfarin")
    with pytest.raises(AttributeError):
        resolution.brand = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "ingredients"),
    [
        ("Tylenol #3", ("acetaminophen", "codeine")),
        ("Tylenol with Codeine #4", ("acetaminophen", "codeine")),
        ("Advil PM", ("diphenhydramine", "ibuprofen")),
        ("Vyvanse 30 mg capsule", ("lisdexamfetamine",)),
        ("Concerta 36 mg ER tablet", ("methylphenidate",)),
        ("Humira Pen 40 mg/0.4 mL", ("adalimumab",)),
        ("Advair Diskus 250-50 mcg/dose", ("fluticasone", "salmeterol")),
        ("Pristiq 50 mg", ("desvenlafaxine",)),
        ("Latuda 40 mg", ("lurasidone",)),
        ("Paxlovid", ("nirmatrelvir", "ritonavir")),
        ("Sprintec", ("ethinyl estradiol", "norgestimate")),
        ("Tylenol Extra Strength", ("acetaminophen",)),
        ("St. John's Wort 300 mg capsule", ("st. john's wort",)),
        ("Dexmethylphenidate ER 10 mg", ("dexmethylphenidate",)),
        ("Tapentadol 50 mg tablet", ("tapentadol",)),
        ("Milnacipran 50 mg", ("milnacipran",)),
    ],
)
def test_brands_and_drugs_the_old_vocabulary_missed(text: str, ingredients: tuple[str, ...]) -> None:
    assert resolve(text).ingredients == ingredients


@pytest.mark.parametrize(
    ("text", "ingredient", "strength", "unit"),
    [
        ("albuterol 90 mcg/act inhaler", "albuterol", 0.09, "mg/actuat"),
        ("insulin glargine 100 unit/mL pen", "insulin glargine", 100.0, "unit/ml"),
        ("Metoprolol succ ER 50 mg", "metoprolol", 50.0, "mg"),
        ("Metoprolol tart 25 mg", "metoprolol", 25.0, "mg"),
        ("Sertraline HCl 50 mg", "sertraline", 50.0, "mg"),
    ],
)
def test_ehr_shapes(text: str, ingredient: str, strength: float, unit: str) -> None:
    resolution = resolve(text)
    assert resolution.ingredients == (ingredient,)
    assert (resolution.components[0].strength, resolution.components[0].unit) == (strength, unit)


def test_salt_abbreviations_are_kept_as_salts() -> None:
    succinate = resolve("Metoprolol succ ER 50 mg")
    assert succinate.components[0].salt == "succinate" and succinate.release == "extended-release"
    assert resolve("Metoprolol tart 25 mg").components[0].salt == "tartrate"
