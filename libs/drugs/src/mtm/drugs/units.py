"""Normalize routes, dosing frequencies and amounts to the canonical forms mtm compares."""

from __future__ import annotations

import re
from functools import lru_cache

ROUTE_NAMES: dict[str, str] = {
    "oral": "oral",
    "po": "oral",
    "p o": "oral",
    "by mouth": "oral",
    "orally": "oral",
    "per os": "oral",
    "oral route": "oral",
    "26643006": "oral",
    "intravenous": "intravenous",
    "iv": "intravenous",
    "i v": "intravenous",
    "ivp": "intravenous",
    "ivpb": "intravenous",
    "intravenously": "intravenous",
    "47625008": "intravenous",
    "subcutaneous": "subcutaneous",
    "subcutaneously": "subcutaneous",
    "sc": "subcutaneous",
    "sq": "subcutaneous",
    "subq": "subcutaneous",
    "sub q": "subcutaneous",
    "subcut": "subcutaneous",
    "sub cut": "subcutaneous",
    "34206005": "subcutaneous",
    "intramuscular": "intramuscular",
    "intramuscularly": "intramuscular",
    "im": "intramuscular",
    "78421000": "intramuscular",
    "sublingual": "sublingual",
    "sublingually": "sublingual",
    "sl": "sublingual",
    "under the tongue": "sublingual",
    "37839007": "sublingual",
    "buccal": "buccal",
    "54471007": "buccal",
    "topical": "topical",
    "topically": "topical",
    "top": "topical",
    "cutaneous": "topical",
    "skin": "topical",
    "6064005": "topical",
    "transdermal": "transdermal",
    "td": "transdermal",
    "45890007": "transdermal",
    "inhalation": "inhalation",
    "inhaled": "inhalation",
    "inh": "inhalation",
    "inhale": "inhalation",
    "respiratory tract": "inhalation",
    "nebulized": "inhalation",
    "neb": "inhalation",
    "447694001": "inhalation",
    "18679011000001101": "inhalation",
    "rectal": "rectal",
    "rectally": "rectal",
    "pr": "rectal",
    "per rectum": "rectal",
    "37161004": "rectal",
    "vaginal": "vaginal",
    "vaginally": "vaginal",
    "pv": "vaginal",
    "per vagina": "vaginal",
    "16857009": "vaginal",
    "ophthalmic": "ophthalmic",
    "eye": "ophthalmic",
    "eyes": "ophthalmic",
    "ocular": "ophthalmic",
    "both eyes": "ophthalmic",
    "ou": "ophthalmic",
    "54485002": "ophthalmic",
    "otic": "otic",
    "ear": "otic",
    "ears": "otic",
    "auricular": "otic",
    "10547007": "otic",
    "nasal": "nasal",
    "intranasal": "nasal",
    "nostril": "nasal",
    "46713006": "nasal",
    "intrauterine": "intrauterine",
    "62226000": "intrauterine",
    "subdermal": "subdermal",
    "intradermal": "intradermal",
    "id": "intradermal",
    "372464004": "intradermal",
    "mucosal": "mucosal",
    "oromucosal": "mucosal",
    "enteral": "enteral",
    "gastrostomy": "enteral",
    "g tube": "enteral",
    "peg tube": "enteral",
    "ng tube": "enteral",
    "nasogastric": "enteral",
    "intrathecal": "intrathecal",
    "epidural": "epidural",
    "intraarticular": "intra-articular",
    "intra articular": "intra-articular",
}
_ROUTE_SUFFIXES = (" route", " use", " administration")


def normalize_route(text: str | None) -> str | None:
    """Map a route abbreviation, phrase or SNOMED CT code to mtm's route name; unknown text is lowercased."""
    if text is None:
        return None
    cleaned = re.sub(r"[\s._\-]+", " ", text.strip().lower()).strip()
    if not cleaned:
        return None
    if cleaned in ROUTE_NAMES:
        return ROUTE_NAMES[cleaned]
    for suffix in _ROUTE_SUFFIXES:
        if cleaned.endswith(suffix) and cleaned.removesuffix(suffix) in ROUTE_NAMES:
            return ROUTE_NAMES[cleaned.removesuffix(suffix)]
    return cleaned


_PERIOD_DAYS: dict[str, float] = {
    "s": 1 / 86400,
    "sec": 1 / 86400,
    "min": 1 / 1440,
    "h": 1 / 24,
    "hr": 1 / 24,
    "hour": 1 / 24,
    "d": 1.0,
    "day": 1.0,
    "wk": 7.0,
    "week": 7.0,
    "mo": 30.0,
    "month": 30.0,
    "a": 365.0,
    "year": 365.0,
}

_FIXED_FREQUENCIES: dict[str, float] = {
    "qd": 1,
    "od": 1,
    "daily": 1,
    "once daily": 1,
    "once a day": 1,
    "one time daily": 1,
    "once per day": 1,
    "every day": 1,
    "each day": 1,
    "every morning": 1,
    "every evening": 1,
    "every night": 1,
    "nightly": 1,
    "qam": 1,
    "qpm": 1,
    "qhs": 1,
    "hs": 1,
    "at bedtime": 1,
    "every bedtime": 1,
    "in the morning": 1,
    "in the evening": 1,
    "bid": 2,
    "twice daily": 2,
    "twice a day": 2,
    "two times daily": 2,
    "two times a day": 2,
    "2 times daily": 2,
    "2 times a day": 2,
    "tid": 3,
    "three times daily": 3,
    "three times a day": 3,
    "3 times daily": 3,
    "3 times a day": 3,
    "qid": 4,
    "four times daily": 4,
    "four times a day": 4,
    "4 times daily": 4,
    "4 times a day": 4,
    "qod": 0.5,
    "every other day": 0.5,
    "alternate days": 0.5,
    "weekly": 1 / 7,
    "once weekly": 1 / 7,
    "once a week": 1 / 7,
    "every week": 1 / 7,
    "qw": 1 / 7,
    "qwk": 1 / 7,
    "twice weekly": 2 / 7,
    "twice a week": 2 / 7,
    "biw": 2 / 7,
    "three times weekly": 3 / 7,
    "three times a week": 3 / 7,
    "tiw": 3 / 7,
    "monthly": 1 / 30,
    "once monthly": 1 / 30,
    "once a month": 1 / 30,
    "every month": 1 / 30,
}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "eight": 8, "twelve": 12}
_INTERVAL = re.compile(
    r"\b(?:q|every)\s*(?P<low>\d+(?:\.\d+)?)(?:\s*(?:-|to)\s*(?P<high>\d+(?:\.\d+)?))?\s*"
    r"(?P<unit>h|hr|hrs|hour|hours|d|day|days|wk|wks|week|weeks|mo|month|months)\b"
)
_TIMES_PER = re.compile(
    r"\b(?P<count>\d+|one|two|three|four|five|six)\s*(?:x|times)\s*(?:a|per|/|each)?\s*"
    r"(?P<unit>day|daily|d|week|weekly|wk|month|monthly)\b"
)
_UNIT_DAYS = {
    "h": 1 / 24,
    "hr": 1 / 24,
    "hrs": 1 / 24,
    "hour": 1 / 24,
    "hours": 1 / 24,
    "d": 1.0,
    "day": 1.0,
    "days": 1.0,
    "daily": 1.0,
    "wk": 7.0,
    "wks": 7.0,
    "week": 7.0,
    "weeks": 7.0,
    "weekly": 7.0,
    "mo": 30.0,
    "month": 30.0,
    "months": 30.0,
    "monthly": 30.0,
}
_PRN = re.compile(r"\b(?:prn|as needed|as required|when needed|if needed)\b")


def frequency_per_day(
    text: str | None = None,
    *,
    frequency: int | None = None,
    period: float | None = None,
    period_unit: str | None = None,
) -> float | None:
    """Administrations per day from sig text or a FHIR Timing.repeat; None when unknown or PRN only."""
    if period is not None and period_unit is not None:
        days = _PERIOD_DAYS.get(period_unit.strip().lower())
        if days is not None and period > 0:
            return clean_number((frequency or 1) / (period * days))
    if text is None:
        return None
    return _frequency_from_text(text)


@lru_cache(maxsize=4096)
def _frequency_from_text(text: str) -> float | None:
    cleaned = re.sub(r"[\s,;.()]+", " ", text.lower()).strip()
    for phrase in sorted(_FIXED_FREQUENCIES, key=len, reverse=True):
        if re.search(rf"(?<![a-z0-9]){re.escape(phrase)}(?![a-z0-9])", cleaned):
            return clean_number(_FIXED_FREQUENCIES[phrase])
    interval = _INTERVAL.search(cleaned)
    if interval:
        # For a range such as q4-6h the shortest interval gives the most administrations a day.
        hours = float(interval["low"])
        days = hours * _UNIT_DAYS[interval["unit"]]
        if days > 0:
            return clean_number(1 / days)
    times = _TIMES_PER.search(cleaned)
    if times:
        count = _NUMBER_WORDS.get(times["count"]) or float(times["count"])
        return clean_number(count / _UNIT_DAYS[times["unit"]])
    if _PRN.search(cleaned):
        return None
    return None


_MASS_TO_MG: dict[str, float] = {
    "g": 1000.0,
    "gm": 1000.0,
    "gram": 1000.0,
    "grams": 1000.0,
    "mg": 1.0,
    "milligram": 1.0,
    "milligrams": 1.0,
    "mcg": 0.001,
    "ug": 0.001,
    "µg": 0.001,
    "μg": 0.001,
    "microgram": 0.001,
    "micrograms": 0.001,
    "ng": 0.000001,
    "nanogram": 0.000001,
    "nanograms": 0.000001,
}
_OTHER_UNITS: dict[str, tuple[float, str]] = {
    "unit": (1.0, "unit"),
    "units": (1.0, "unit"),
    "unt": (1.0, "unit"),
    "u": (1.0, "unit"),
    "iu": (1.0, "unit"),
    "[iu]": (1.0, "unit"),
    "meq": (1.0, "meq"),
    "mmol": (1.0, "mmol"),
    "ml": (1.0, "ml"),
    "milliliter": (1.0, "ml"),
    "milliliters": (1.0, "ml"),
    "l": (1000.0, "ml"),
    "liter": (1000.0, "ml"),
    "%": (1.0, "%"),
}


def clean_number(value: float) -> float:
    """Drop binary floating-point noise from unit conversions (0.075000000001 -> 0.075)."""
    return float(f"{value:.10g}")


def to_canonical_amount(value: float, unit: str) -> tuple[float, str]:
    """Convert an amount to mg (any mass), unit, meq, mmol or ml; unknown units pass through lowercased."""
    key = unit.strip().lower()
    if key in _MASS_TO_MG:
        return clean_number(value * _MASS_TO_MG[key]), "mg"
    if key in _OTHER_UNITS:
        factor, canonical = _OTHER_UNITS[key]
        return clean_number(value * factor), canonical
    return value, key
