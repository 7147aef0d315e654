"""Build the DUR inputs (patient context and current medication list) from a reconciliation."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from mtm.contracts.clinical import Observation
from mtm.contracts.events import ReconciledItem, Reconciliation
from mtm.review.domain.dur.model import CheckedMedication, PatientContext

EGFR_CODES = frozenset({"62238-1", "33914-3", "98979-8", "48642-3", "48643-1", "88293-6", "88294-4"})
CREATININE_MASS_CODES = frozenset({"2160-0", "38483-4"})
CREATININE_MOLAR_CODES = frozenset({"14682-9"})
WEIGHT_CODES = frozenset({"29463-7", "3141-9"})
HEIGHT_CODES = frozenset({"8302-2", "8306-3", "3137-7"})
CM_PER_INCH = 2.54
CREATININE_UMOL_PER_MG_DL = 88.4
KG_PER_LB = 0.4536

_HLA_ALLELE = re.compile(r"^\s*(HLA-[A-Z0-9]+\*\d+:\d+)", re.IGNORECASE)
_GENE_RESULT = re.compile(
    r"^\s*([A-Z][A-Z0-9]+(?:-[A-Z0-9]+)?)"
    r"(?:\s+(?:gene\s+)?(?:phenotype|genotype|diplotype|status|function|metabolizer status|activity|result)\b|\s*$)"
)
_UMOL = ("umol", "µmol", "μmol")
# A strength as product names write it: "100 MCG", "5 MG/ML", "100 mg/5 mL", "90 MCG/ACTUAT".
_STRENGTH = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(mcg|mg|g|unt|unit|units|meq)\b(?:\s*/\s*(\d+(?:\.\d+)?)?\s*(ml|actuat)\b)?",
    re.IGNORECASE,
)
_POUNDS = ("lb", "[lb_av]", "lbs", "pound")


def _age(birth: date | None, on: date) -> int | None:
    if birth is None:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _latest(observations: list[Observation]) -> Observation | None:
    """The most recent observation with a numeric value; undated ones count as oldest."""
    valued = [obs for obs in observations if obs.value is not None]
    if not valued:
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    return max(valued, key=lambda obs: obs.effective or oldest)


def _creatinine_mg_dl(observation: Observation) -> float | None:
    unit = (observation.unit or "").lower()
    assert observation.value is not None
    if observation.code in CREATININE_MOLAR_CODES or any(token in unit for token in _UMOL):
        return observation.value / CREATININE_UMOL_PER_MG_DL
    return observation.value


def _weight_kg(observation: Observation) -> float | None:
    unit = (observation.unit or "").lower()
    assert observation.value is not None
    if any(token in unit for token in _POUNDS):
        return observation.value * KG_PER_LB
    if unit == "g":
        return observation.value / 1000
    return observation.value


def _height_cm(observation: Observation) -> float | None:
    unit = (observation.unit or "").lower()
    assert observation.value is not None
    if unit in ("in", "[in_i]", "inch", "inches"):
        return observation.value * CM_PER_INCH
    if unit == "m":
        return observation.value * 100
    return observation.value


def _genomics(observations: tuple[Observation, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """Gene phenotypes (`CYP2C19 phenotype` = `Poor metabolizer`) and HLA results (`HLA-B*57:01` = `Positive`)."""
    pgx: dict[str, str] = {}
    hla: dict[str, str] = {}
    oldest = datetime.min.replace(tzinfo=UTC)
    for observation in sorted(observations, key=lambda obs: obs.effective or oldest):
        if not observation.value_text:
            continue
        allele = _HLA_ALLELE.match(observation.text)
        if allele:
            hla[allele.group(1).upper()] = observation.value_text
            continue
        gene = _GENE_RESULT.match(observation.text)
        if gene and observation.code not in EGFR_CODES | CREATININE_MASS_CODES | WEIGHT_CODES | HEIGHT_CODES:
            pgx[gene.group(1).upper()] = observation.value_text
    return pgx, hla


def strengths(text: str, ingredients: tuple[str, ...]) -> dict[str, tuple[float, str]]:
    """The strength a single-ingredient product's name states (`Levothyroxine 100 MCG Oral Tablet` -> 100 mcg,
    `Morphine 100 MG/5ML Oral Solution` -> 20 mg/ml); nothing when the name gives none or several."""
    if len(ingredients) != 1:
        return {}
    found = set()
    for match in _STRENGTH.finditer(text):
        value, unit, volume, per = float(match.group(1)), match.group(2).lower(), match.group(3), match.group(4)
        unit = "unit" if unit in ("units", "unt") else unit
        if per:
            found.add((value / float(volume or 1), f"{unit}/{per.lower()}"))
        else:
            found.add((value, unit))
    return {ingredients[0]: found.pop()} if len(found) == 1 else {}


def _medication(item: ReconciledItem) -> CheckedMedication | None:
    entry = item.current
    if entry is None:
        return None
    daily = {
        dose.ingredient.lower(): (dose.daily_amount, dose.unit)
        for dose in item.ingredient_doses
        if dose.daily_amount is not None and dose.unit
    }
    ingredients = tuple(name.lower() for name in item.ingredients)
    return CheckedMedication(
        ingredients=ingredients,
        text=entry.text,
        daily_amounts=daily,
        frequency_per_day=item.frequency_per_day if item.frequency_per_day is not None else entry.frequency_per_day,
        route=item.route,
        resolved=item.resolved and bool(item.ingredients),
        dose_value=entry.dose_value,
        dose_unit=entry.dose_unit,
        strengths=strengths(entry.text, ingredients),
        as_needed=entry.as_needed,
    )


def current_items(reconciliation: Reconciliation) -> list[ReconciledItem]:
    """Items on the list the patient goes home with.

    With a discharge list, that is every item not stopped. Without one (no item has a discharge entry),
    the home list is all there is, whatever status reconciliation gave its items.
    """
    items = reconciliation.items
    if any(item.discharge is not None for item in items):
        return [item for item in items if item.status != "stopped"]
    return [item for item in items if item.home is not None]


def context_from_reconciliation(
    reconciliation: Reconciliation, *, today: date | None = None
) -> tuple[PatientContext, list[CheckedMedication]]:
    """Patient context and current medications; age is taken at discharge, else at `today` (default: now)."""
    on = (
        reconciliation.discharged_at.date()
        if reconciliation.discharged_at is not None
        else today or datetime.now(UTC).date()
    )
    observations = reconciliation.observations
    by_kind: dict[str, list[Observation]] = {"egfr": [], "creatinine": [], "weight": [], "height": []}
    for observation in observations:
        if observation.code in EGFR_CODES:
            by_kind["egfr"].append(observation)
        elif observation.code in CREATININE_MASS_CODES | CREATININE_MOLAR_CODES:
            by_kind["creatinine"].append(observation)
        elif observation.code in WEIGHT_CODES:
            by_kind["weight"].append(observation)
        elif observation.code in HEIGHT_CODES:
            by_kind["height"].append(observation)
    egfr = _latest(by_kind["egfr"])
    creatinine = _latest(by_kind["creatinine"])
    weight = _latest(by_kind["weight"])
    height = _latest(by_kind["height"])
    pgx, hla = _genomics(observations)
    patient = reconciliation.patient
    context = PatientContext(
        age_years=_age(patient.birth_date, on),
        sex=patient.sex,
        weight_kg=_weight_kg(weight) if weight else None,
        height_cm=_height_cm(height) if height else None,
        egfr=egfr.value if egfr else None,
        serum_creatinine_mg_dl=_creatinine_mg_dl(creatinine) if creatinine else None,
        conditions=reconciliation.conditions,
        allergies=reconciliation.allergies,
        pgx=pgx,
        hla=hla,
        observations=tuple(obs for obs in observations if obs.value_text is not None and obs.code),
    )
    medications = [med for item in current_items(reconciliation) if (med := _medication(item)) is not None]
    return context, medications
