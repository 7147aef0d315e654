"""Resolve medication text or an RxNorm code to ingredients, strengths and formulation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from mtm.drugs.parse import Strength, is_number, read_number_group, split_brackets
from mtm.drugs.units import ROUTE_NAMES, clean_number, to_canonical_amount
from mtm.drugs.vocabulary import (
    CONNECTOR_WORDS,
    FILLER_WORDS,
    MIN_FUZZY_LENGTH,
    RELEASE_PHRASES,
    BrandEntry,
    DoseFormEntry,
    fuzzy_name,
    phrase_key,
    tokenize,
    vocabulary,
    within_one_edit,
)

MatchedBy = Literal["rxnorm", "text"]
# EHR abbreviations of salts, spelled out so "Metoprolol succ ER" and "metoprolol succinate" compare equal.
SALT_ABBREVIATIONS = {"succ": "succinate", "tart": "tartrate"}


@dataclass(frozen=True, slots=True)
class Component:
    """One active ingredient of a product; liquid strengths are per 1 mL with the labelled volume kept."""

    ingredient: str
    salt: str | None = None
    strength: float | None = None
    unit: str | None = None
    per_volume_ml: float | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a medication text or code denotes; `ingredients` is empty when it could not be resolved safely."""

    ingredients: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    dose_form: str | None = None
    release: str | None = None
    route_hint: str | None = None
    brand: str | None = None
    matched_by: MatchedBy | None = None

    @property
    def resolved(self) -> bool:
        return bool(self.ingredients)


UNRESOLVED = Resolution()


@dataclass(slots=True)
class _Found:
    ingredient: str
    salt: str | None
    segment: int
    accepts_strength: bool
    strength: Strength | None = None


@dataclass(slots=True)
class _Scan:
    found: list[_Found] = field(default_factory=list)
    brands: list[BrandEntry] = field(default_factory=list)
    dose_form: str | None = None
    form_route: str | None = None
    release: str | None = None
    text_route: str | None = None


def _longest_phrase(tokens: list[str], start: int, longest: int) -> tuple[int, str, object]:
    vocab = vocabulary()
    for length in range(min(longest, len(tokens) - start), 0, -1):
        key = " ".join(tokens[start : start + length])
        if key in vocab.ingredients:
            return length, "ingredient", vocab.ingredients[key]
        if key in vocab.brands:
            return length, "brand", vocab.brands[key]
        if key in vocab.dose_forms:
            return length, "form", vocab.dose_forms[key]
        if key in RELEASE_PHRASES:
            return length, "release", RELEASE_PHRASES[key]
    return 0, "", None


def _salt_run(tokens: list[str], start: int, salts: frozenset[str]) -> list[str]:
    run: list[str] = []
    position = start
    while position < len(tokens) and len(run) < 3:
        word = tokens[position]
        if word in salts:
            run.append(word)
        elif len(word) >= MIN_FUZZY_LENGTH and (near := _near_salt(word, salts)):
            # RxNorm displays carry salt typos ("hydrocholoride"); a salt never changes the ingredient.
            run.append(near)
        else:
            break
        position += 1
    return run


def _near_salt(word: str, salts: frozenset[str]) -> str | None:
    matches = [salt for salt in salts if len(salt) >= MIN_FUZZY_LENGTH and within_one_edit(word, salt)]
    return matches[0] if len(matches) == 1 else None


def _add_brand(scan: _Scan, entry: BrandEntry, segment: int) -> None:
    scan.brands.append(entry)
    single = len(entry.ingredients) == 1
    for ingredient, salt in entry.ingredients:
        scan.found.append(_Found(ingredient, salt, segment, accepts_strength=single))


def _scan(body: str) -> _Scan | None:
    """Walk the tokens; None when a word is neither vocabulary nor known filler (never guess around it)."""
    vocab = vocabulary()
    tokens = tokenize(body)
    scan = _Scan()
    segment = 0
    after_ingredient = False
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if is_number(token):
            strength, used = read_number_group(tokens, position)
            if strength is not None:
                for found in reversed(scan.found):
                    if found.segment != segment:
                        break
                    if found.accepts_strength and found.strength is None:
                        found.strength = strength
                        break
            position += used
            after_ingredient = False
            continue
        if token in ("/", "+"):
            segment += 1
            position += 1
            after_ingredient = False
            continue
        if token == "%":
            position += 1
            continue
        if after_ingredient and (salt_words := _salt_run(tokens, position, vocab.salts)):
            scan.found[-1].salt = " ".join(SALT_ABBREVIATIONS.get(word, word) for word in salt_words)
            position += len(salt_words)
            after_ingredient = False
            continue
        length, kind, value = _longest_phrase(tokens, position, vocab.max_phrase_tokens)
        if not length and len(token) >= MIN_FUZZY_LENGTH and token not in FILLER_WORDS:
            near = fuzzy_name(token)
            if near is not None:
                length, kind, value = _longest_phrase([near], 0, 1)
        after_ingredient = False
        if kind == "ingredient":
            scan.found.append(_Found(str(value), None, segment, accepts_strength=True))
            after_ingredient = True
        elif isinstance(value, BrandEntry):
            _add_brand(scan, value, segment)
            after_ingredient = len(value.ingredients) == 1
        elif isinstance(value, DoseFormEntry):
            if scan.dose_form is None:
                scan.dose_form, scan.form_route = value.dose_form, value.route
        elif kind == "release":
            scan.release = scan.release or str(value)
        elif token in CONNECTOR_WORDS:
            segment += 1
            length = 1
        elif token in ROUTE_NAMES:
            scan.text_route = scan.text_route or ROUTE_NAMES[token]
            length = 1
        elif token in FILLER_WORDS or token in vocab.salts:
            length = 1
        else:
            return None
        position += length
    return scan


def _merge(found: list[_Found]) -> tuple[Component, ...]:
    by_ingredient: dict[str, Component] = {}
    for item in found:
        strength = item.strength
        component = Component(
            ingredient=item.ingredient,
            salt=item.salt,
            strength=strength.value if strength else None,
            unit=strength.unit if strength else None,
            per_volume_ml=strength.per_volume_ml if strength else None,
        )
        earlier = by_ingredient.get(item.ingredient)
        if earlier is not None:
            component = replace(
                earlier,
                salt=earlier.salt or component.salt,
                strength=earlier.strength if earlier.strength is not None else component.strength,
                unit=earlier.unit or component.unit,
                per_volume_ml=earlier.per_volume_ml or component.per_volume_ml,
            )
        by_ingredient[item.ingredient] = component
    return tuple(by_ingredient[name] for name in sorted(by_ingredient))


@lru_cache(maxsize=8192)
def resolve_text(text: str) -> Resolution:
    """Resolve free or RxNorm-style medication text without a code."""
    body, bracketed = split_brackets(text)
    scan = _scan(body)
    if scan is None:
        return UNRESOLVED
    vocab = vocabulary()
    bracket_brand = bracketed[0] if bracketed else None
    if not scan.found and bracket_brand is not None:
        entry = vocab.brands.get(phrase_key(bracket_brand))
        if entry is not None:
            _add_brand(scan, entry, segment=0)
    if not scan.found:
        return UNRESOLVED
    brand_entry = next((entry for entry in scan.brands if entry.is_brand), None)
    brand = bracket_brand or (brand_entry.name if brand_entry else None)
    release = scan.release or next((entry.release for entry in scan.brands if entry.release), None)
    route = scan.form_route or next((entry.route for entry in scan.brands if entry.route), None)
    components = _merge(scan.found)
    return Resolution(
        ingredients=tuple(component.ingredient for component in components),
        components=components,
        dose_form=scan.dose_form,
        release=release,
        route_hint=scan.text_route or route,
        brand=brand,
        matched_by="text",
    )


def load_vocabulary() -> None:
    """Read the packaged tables now (a service at start), not in the first message's batch."""
    vocabulary()


@lru_cache(maxsize=8192)
def resolve(text: str, rxnorm_code: str | None = None) -> Resolution:
    """Resolve a medication; a known RxNorm code decides the ingredients, the text fills in the rest."""
    code = (rxnorm_code or "").strip()
    known = vocabulary().rxnorm.get(code) if code else None
    if known is None:
        return resolve_text(text or "")
    ingredients, display = known
    for candidate in (text or "", display):
        parsed = resolve_text(candidate)
        if parsed.ingredients == ingredients:
            return replace(parsed, matched_by="rxnorm")
    return Resolution(
        ingredients=ingredients,
        components=tuple(Component(ingredient) for ingredient in ingredients),
        matched_by="rxnorm",
    )


_UNIT_DOSE_FORMS = frozenset(
    """tablet tablets tab tabs capsule capsules cap caps patch patches puff puffs actuation actuations actuat
    spray sprays suppository suppositories each unit_dose pill pills lozenge lozenges film films ring implant
    pack kit dose doses application applications drop drops""".split()
)
_PER_ACTUATION_UNITS = frozenset({"puff", "puffs", "actuation", "actuations", "actuat", "spray", "sprays"})


def dose_amount_per_administration(
    resolution: Resolution, dose_value: float, dose_unit: str
) -> dict[str, tuple[float, str]]:
    """Per-ingredient amount given at one administration, e.g. 2 x "Acetaminophen 325 MG Oral Tablet"."""
    if not resolution.resolved or dose_value is None or not dose_unit:
        return {}
    unit_key = dose_unit.strip().lower().rstrip(".")
    amount, unit = to_canonical_amount(dose_value, unit_key)
    if unit in ("mg", "unit", "meq", "mmol"):
        if len(resolution.components) != 1:
            return {}
        return {resolution.ingredients[0]: (amount, unit)}
    result: dict[str, tuple[float, str]] = {}
    for component in resolution.components:
        if component.strength is None or component.unit is None:
            return {}
        numerator, _, denominator = component.unit.partition("/")
        if unit == "ml" and denominator == "ml":
            result[component.ingredient] = (clean_number(component.strength * amount), numerator)
        elif unit_key in _PER_ACTUATION_UNITS and denominator == "actuat":
            result[component.ingredient] = (clean_number(component.strength * dose_value), numerator)
        elif unit_key in _UNIT_DOSE_FORMS and not denominator:
            result[component.ingredient] = (clean_number(component.strength * dose_value), numerator)
        else:
            return {}
    return result
