"""Test helpers for the DUR engine: medication builders and the Synthea extract turned into DUR inputs."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from mtm.contracts import Alert, Allergy, Condition
from mtm.review.domain.dur import CheckedMedication, PatientContext

try:
    from mtm.drugs import resolve
except ImportError:  # mtm.drugs is developed alongside; the map below keeps these tests independent of it
    resolve = None

SYNTHEA_EXTRACT = Path(__file__).resolve().parents[1] / "data" / "synthea_dur_extract.json"

# Ingredients of the 102 RxNorm codes in the Synthea set (medication_codes.csv), read off each display name.
# Used when mtm.drugs.resolve is unavailable or resolves nothing.
SYNTHEA_INGREDIENTS: dict[str, tuple[str, ...]] = {
    "316672": ("simvastatin",),
    "313782": ("acetaminophen",),
    "316049": ("hydrochlorothiazide",),
    "849574": ("naproxen",),
    "562251": ("amoxicillin", "clavulanate"),
    "310965": ("ibuprofen",),
    "757594": ("norethindrone",),
    "748962": ("norethindrone",),
    "389221": ("etonogestrel",),
    "1043400": ("acetaminophen", "dextromethorphan", "doxylamine"),
    "1870230": ("epinephrine",),
    "831533": ("norethindrone",),
    "751905": ("ethinyl estradiol", "norgestimate"),
    "2001499": ("cyanocobalamin",),
    "1049630": ("diphenhydramine",),
    "309362": ("clopidogrel",),
    "904419": ("alendronate",),
    "1000126": ("medroxyprogesterone",),
    "834102": ("penicillin v",),
    "895994": ("fluticasone",),
    "745679": ("albuterol",),
    "1367439": ("ethinyl estradiol", "etonogestrel"),
    "860975": ("metformin",),
    "897718": ("verapamil",),
    "197604": ("digoxin",),
    "855332": ("warfarin",),
    "705129": ("nitroglycerin",),
    "807283": ("levonorgestrel",),
    "310325": ("ferrous sulfate",),
    "312961": ("simvastatin",),
    "197361": ("amlodipine",),
    "748856": ("drospirenone", "ethinyl estradiol"),
    "896209": ("fluticasone", "salmeterol"),
    "106258": ("hydrocortisone",),
    "310436": ("galantamine",),
    "477045": ("chlorpheniramine",),
    "749762": ("ethinyl estradiol", "levonorgestrel"),
    "857005": ("acetaminophen", "hydrocodone"),
    "1534809": ("ethinyl estradiol", "norelgestromin"),
    "861467": ("meperidine",),
    "1804799": ("alteplase",),
    "1000156": ("medroxyprogesterone",),
    "311989": ("nitrofurantoin",),
    "1094107": ("phenazopyridine",),
    "198014": ("naproxen",),
    "197319": ("allopurinol",),
    "997488": ("fexofenadine",),
    "748879": ("ethinyl estradiol", "levonorgestrel"),
    "665078": ("loratadine",),
    "1049221": ("acetaminophen", "oxycodone"),
    "106892": ("insulin isophane", "insulin regular"),
    "1599803": ("donepezil", "memantine"),
    "978950": ("dienogest", "estradiol"),
    "311372": ("loratadine",),
    "197378": ("astemizole",),
    "1605257": ("levonorgestrel",),
    "1856546": ("levonorgestrel",),
    "1359133": ("ethinyl estradiol", "ferrous fumarate", "norethindrone"),
    "866414": ("metoprolol",),
    "315971": ("furosemide",),
    "308971": ("carbamazepine",),
    "1803932": ("leucovorin",),
    "1736776": ("oxaliplatin",),
    "1860480": ("docetaxel",),
    "752899": ("leuprolide",),
    "316052": ("hydrochlorothiazide",),
    "858069": ("colchicine",),
    "308192": ("amoxicillin",),
    "834061": ("penicillin v",),
    "309097": ("cefuroxime",),
    "966222": ("levothyroxine",),
    "105586": ("methotrexate",),
    "563026": ("diazepam",),
    "1153378": ("clonazepam",),
    "282464": ("acetaminophen",),
    "1310197": ("acetaminophen", "hydrocodone"),
    "141918": ("terfenadine",),
    "1740467": ("ondansetron",),
    "311995": ("nitrofurantoin",),
    "198031": ("nicotine",),
    "328670": ("sertraline",),
    "856980": ("acetaminophen", "hydrocodone"),
    "996740": ("memantine",),
    "997501": ("fexofenadine",),
    "835900": ("cyclosporine",),
    "198405": ("ibuprofen",),
    "308182": ("amoxicillin",),
    "1860154": ("oxycodone",),
    "608139": ("atomoxetine",),
    "1660014": ("epinephrine",),
    "834357": ("amiodarone",),
    "1190795": ("atropine",),
    "312617": ("prednisone",),
    "314659": ("heparin",),
    "313002": ("sodium chloride",),
    "1732136": ("morphine",),
    "1659149": ("piperacillin", "tazobactam"),
    "311700": ("midazolam",),
    "1808217": ("propofol",),
    "1234995": ("rocuronium",),
    "542347": ("isoflurane",),
    "73032": ("remifentanil",),
}


def med(
    *ingredients: str,
    daily: dict[str, tuple[float, str]] | None = None,
    per_day: float | None = None,
    route: str | None = "oral",
    text: str | None = None,
) -> CheckedMedication:
    return CheckedMedication(
        ingredients=ingredients,
        text=text or " / ".join(ingredients),
        daily_amounts=daily or {},
        frequency_per_day=per_day,
        route=route,
    )


def dosed(ingredient: str, daily_mg: float, per_day: float = 1, unit: str = "mg") -> CheckedMedication:
    return med(ingredient, daily={ingredient: (daily_mg, unit)}, per_day=per_day)


def synthea_medication(rxnorm: str, display: str) -> CheckedMedication:
    ingredients: tuple[str, ...] = ()
    route = None
    if resolve is not None:
        resolution = resolve(display, rxnorm)
        ingredients, route = tuple(resolution.ingredients), resolution.route_hint
    if not ingredients:
        ingredients = SYNTHEA_INGREDIENTS.get(rxnorm, ())
    return CheckedMedication(ingredients=ingredients, text=display, route=route, resolved=bool(ingredients))


def of_kind(alerts: list[Alert], kind: str) -> list[Alert]:
    return [alert for alert in alerts if alert.kind == kind]


def _age(birth: str | None, on: str | None) -> int | None:
    if not birth or not on:
        return None
    born, day = date.fromisoformat(birth), date.fromisoformat(on)
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def synthea_patients() -> list[tuple[str, PatientContext, list[CheckedMedication]]]:
    patients = json.loads(SYNTHEA_EXTRACT.read_text(encoding="utf-8"))
    result = []
    for patient in patients:
        labs = patient["labs"]
        medications = [synthea_medication(entry["rxnorm"], entry["display"]) for entry in patient["medications"]]
        context = PatientContext(
            age_years=_age(patient["birth_date"], patient["reference_date"]),
            sex=patient["sex"] if patient["sex"] in ("male", "female") else "unknown",
            weight_kg=labs["weight"]["value"] if labs["weight"] else None,
            egfr=labs["egfr"]["value"] if labs["egfr"] else None,
            serum_creatinine_mg_dl=labs["creatinine"]["value"] if labs["creatinine"] else None,
            conditions=tuple(
                Condition(
                    system=item["system"], code=item["code"], text=item["text"], clinical_status=item["clinical_status"]
                )
                for item in patient["conditions"]
            ),
            allergies=tuple(
                Allergy(system=item["system"], code=item["code"], text=item["text"]) for item in patient["allergies"]
            ),
        )
        result.append((patient["patient_id"], context, medications))
    return result
