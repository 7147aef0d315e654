"""Read RxNorm-style medication strings: clean the text and parse strengths such as "250 MG per 5 ML"."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mtm.drugs.units import clean_number, to_canonical_amount

_BRACKETED = re.compile(r"\[([^\]]*)\]")
# Application numbers ("NDA020503") identify the labeler's approval, not the drug.
_APPLICATION_NUMBER = re.compile(r"\b(?:nda|anda|bla)\s?\d{4,}\b")
_MICRO = re.compile(r"[µμ]g\b")
_NUMBER = re.compile(r"^(?:\d+(?:\.\d+)?|\.\d+)$")

NUMERATOR_UNITS = frozenset(
    [
        *"mg mcg ug g gm gram grams milligram milligrams microgram micrograms ng".split(),
        *"unt unit units iu meq mmol %".split(),
    ]
)
DENOMINATOR_UNITS: dict[str, str] = {
    "ml": "ml",
    "l": "ml",
    "actuat": "actuat",
    "act": "actuat",
    "inh": "actuat",
    "actuation": "actuat",
    "puff": "actuat",
    "spray": "actuat",
    "hr": "hr",
    "h": "hr",
    "day": "day",
    "mg": "mg",
    "g": "g",
    "gm": "g",
}


@dataclass(frozen=True, slots=True)
class Strength:
    """Canonical strength: amount in `unit`; for liquids the amount per 1 mL plus the labelled volume."""

    value: float
    unit: str
    per_volume_ml: float | None = None


def split_brackets(text: str) -> tuple[str, tuple[str, ...]]:
    """Lowercase the text, drop application numbers and pull out bracketed RxNorm brand names."""
    lowered = _MICRO.sub("mcg", text.lower())
    lowered = _APPLICATION_NUMBER.sub(" ", lowered)
    brands = tuple(part.strip() for part in _BRACKETED.findall(lowered) if part.strip())
    return _BRACKETED.sub(" ", lowered), brands


def is_number(token: str) -> bool:
    return bool(_NUMBER.match(token))


def read_number_group(tokens: list[str], start: int) -> tuple[Strength | None, int]:
    """Parse the number at `start` and its units; returns the strength (None if not one) and tokens used."""
    end = len(tokens)
    if start + 2 < end and tokens[start + 1] == "/" and is_number(tokens[start + 2]):
        # "5/325" or "0.12/0.015 MG": per-ingredient strengths without names cannot be assigned safely.
        position = start
        while position + 2 < end and tokens[position + 1] == "/" and is_number(tokens[position + 2]):
            position += 2
        position += 1
        if position < end and tokens[position] in NUMERATOR_UNITS:
            position += 1
        return None, position - start
    if start + 1 >= end or tokens[start + 1] not in NUMERATOR_UNITS:
        return None, 1
    amount, unit = to_canonical_amount(float(tokens[start]), tokens[start + 1])
    position = start + 2
    if position < end and tokens[position] in ("/", "per"):
        volume = 1.0
        cursor = position + 1
        if cursor < end and is_number(tokens[cursor]):
            volume = float(tokens[cursor])
            cursor += 1
        if cursor < end and tokens[cursor] in DENOMINATOR_UNITS:
            denominator = DENOMINATOR_UNITS[tokens[cursor]]
            if tokens[cursor] == "l":
                volume *= 1000.0
            if volume <= 0:
                return None, cursor + 1 - start
            per_volume = volume if denominator == "ml" else None
            strength = Strength(clean_number(amount / volume), f"{unit}/{denominator}", per_volume)
            return strength, cursor + 1 - start
    return Strength(amount, unit), position - start
