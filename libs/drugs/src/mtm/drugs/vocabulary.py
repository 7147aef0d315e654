"""Load the packaged vocabulary tables once and index them for phrase lookup."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

# "#" is kept: "Tylenol #3" names a different product from "Tylenol" (acetaminophen with codeine), so a "#"
# outside a known product name leaves the text unresolved instead of dropping an ingredient.
TOKEN_PATTERN = re.compile(
    r"(?P<num>\d+(?:\.\d+)?|\.\d+)|(?P<word>[a-z][a-z0-9]*)|(?P<sep>[/+])|(?P<pct>%)|(?P<hash>#)"
)

RELEASE_PHRASES: dict[str, str] = {
    "extended release": "extended-release",
    "sustained release": "extended-release",
    "controlled release": "extended-release",
    "modified release": "extended-release",
    "long acting": "extended-release",
    "er": "extended-release",
    "xr": "extended-release",
    "xl": "extended-release",
    "sr": "extended-release",
    "cr": "extended-release",
    "la": "extended-release",
    "cd": "extended-release",
    "xt": "extended-release",
    "delayed release": "delayed-release",
    "enteric coated": "delayed-release",
    "dr": "delayed-release",
    "ec": "delayed-release",
}

# Words that may surround a drug name without changing which drug it is: units, packaging, sig phrases and
# RxNorm qualifiers. Any other unrecognised word makes the text unresolved rather than partially matched.
FILLER_WORDS = frozenset(
    """
    mg mcg ug g gm gram grams milligram milligrams microgram micrograms ng ml l unt unit units iu meq mmol
    act inh actuat actuation actuations hr hrs hour hours h day days week weeks month months dose doses
    per each of the a an and or as for in to at on by with without
    take takes taking give apply inhale inject use instill insert chew swallow dissolve place
    puff puffs spray sprays drop drops tablet tablets capsule capsules
    mouth daily once twice thrice times every other q qd bid tid qid qhs qam qpm hs prn needed bedtime
    morning evening night nightly noon before after meals meal food breakfast lunch dinner
    usp generic brand product system emollient porcine bovine abuse deterrent strength regular plain modified
    """.split()
)
CONNECTOR_WORDS = frozenset({"and", "with", "plus"})
# DrugBank id blocks holding mostly marketed drugs. The vocabulary takes every DrugBank entry, but a typo is only
# corrected towards these (and curated and brand names): next to 17,000 experimental compounds, "lactate" is one
# letter from "lactase" and "trimethyl" from "triethyl", and a guess there would name a drug nobody wrote.
FUZZY_SOURCES = ("DB00", "DB01", "DB09")


@dataclass(frozen=True, slots=True)
class BrandEntry:
    name: str
    ingredients: tuple[tuple[str, str | None], ...]
    release: str | None
    route: str | None
    is_brand: bool


@dataclass(frozen=True, slots=True)
class DoseFormEntry:
    dose_form: str
    route: str | None


@dataclass(slots=True)
class Vocabulary:
    ingredients: dict[str, str] = field(default_factory=dict)
    brands: dict[str, BrandEntry] = field(default_factory=dict)
    salts: frozenset[str] = frozenset()
    dose_forms: dict[str, DoseFormEntry] = field(default_factory=dict)
    rxnorm: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    max_phrase_tokens: int = 1
    # Names a one-letter typo may be corrected to: marketed-drug names only (see FUZZY_SOURCES).
    fuzzy_targets: set[str] = field(default_factory=set)
    curated_brands: set[str] = field(default_factory=set)


def tokenize(text: str) -> list[str]:
    """Split lowercase text into number, word, separator and percent tokens."""
    return [match.group() for match in TOKEN_PATTERN.finditer(text)]


def phrase_key(text: str) -> str:
    """Canonical lookup key: the token sequence of the lowercased phrase."""
    return " ".join(tokenize(text.lower()))


def _rows(name: str) -> Iterator[dict[str, str]]:
    with resources.files("mtm.drugs").joinpath("data", name).open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def split_salt(name: str, salts: frozenset[str], ingredients: dict[str, str]) -> tuple[str, str | None]:
    """Split "metoprolol succinate" into ("metoprolol", "succinate") unless the whole is an ingredient."""
    key = phrase_key(name)
    if key in ingredients:
        return ingredients[key], None
    words = key.split()
    for cut in range(len(words) - 1, 0, -1):
        head, tail = " ".join(words[:cut]), words[cut:]
        if head in ingredients and all(word in salts for word in tail):
            return ingredients[head], " ".join(tail)
    raise LookupError(f"not a known ingredient: {name!r}")


@cache
def vocabulary() -> Vocabulary:
    """The packaged tables, read once per process."""
    vocab = Vocabulary()
    vocab.salts = frozenset(phrase_key(row["salt"]) for row in _rows("salts.csv"))
    # Derived tables are written as phrase keys by tools/build_vocabulary.py (a test checks it): no re-tokenizing.
    for row in _rows("ingredient_synonyms.csv"):
        key = row["synonym"]
        vocab.ingredients[key] = row["ingredient"]
        if row["source"].rsplit(" ", 1)[-1].startswith(FUZZY_SOURCES):
            vocab.fuzzy_targets.add(key)
    # Curated rows override DrugBank-derived ones (US names, abbreviations, known misspellings).
    for row in _rows("curated_synonyms.csv"):
        key = phrase_key(row["synonym"])
        vocab.ingredients[key] = row["ingredient"]
        vocab.fuzzy_targets.add(key)
    for ingredient in set(vocab.ingredients.values()):
        vocab.ingredients.setdefault(phrase_key(ingredient), ingredient)
    # NDC Directory product names first, so the curated brands (which carry release and route) override them.
    for row in _rows("ndc_brands.csv"):
        vocab.brands[row["name"]] = BrandEntry(
            name=row["name"],
            ingredients=tuple((ingredient, None) for ingredient in row["ingredients"].split(";")),
            release=None,
            route=None,
            is_brand=True,
        )
    for row in _rows("brands.csv"):
        parts = tuple(split_salt(part, vocab.salts, vocab.ingredients) for part in row["ingredients"].split(";"))
        vocab.curated_brands.add(phrase_key(row["name"]))
        vocab.brands[phrase_key(row["name"])] = BrandEntry(
            name=row["name"],
            ingredients=parts,
            release=row["release"] or None,
            route=row["route"] or None,
            is_brand=row["kind"] == "brand",
        )
    for row in _rows("dose_forms.csv"):
        vocab.dose_forms[phrase_key(row["phrase"])] = DoseFormEntry(row["dose_form"], row["route"] or None)
    for row in _rows("rxnorm_codes.csv"):
        vocab.rxnorm[row["rxcui"]] = (tuple(row["ingredients"].split("|")), row["display"])
    phrase_tables = (vocab.ingredients, vocab.brands, vocab.dose_forms, RELEASE_PHRASES)
    vocab.max_phrase_tokens = max(len(key.split()) for table in phrase_tables for key in table)
    return vocab


def within_one_edit(a: str, b: str) -> bool:
    """True when `a` and `b` differ by at most one insertion, deletion, substitution or transposition."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        first, second = diffs if len(diffs) == 2 else (0, 0)
        return second == first + 1 and a[first] == b[second] and a[second] == b[first]
    shorter, longer = (a, b) if len(a) < len(b) else (b, a)
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))


MIN_FUZZY_LENGTH = 7


@cache
def _fuzzy_index() -> dict[str, frozenset[str]]:
    """Single-character deletions of every long one-word name, to find one-edit typos without a scan."""
    vocab = vocabulary()
    index: dict[str, set[str]] = {}
    names = [key for key in (*vocab.fuzzy_targets, *vocab.curated_brands) if " " not in key]
    for name in names:
        if len(name) < MIN_FUZZY_LENGTH or not name.isalpha():
            continue
        index.setdefault(name, set()).add(name)
        for i in range(len(name)):
            index.setdefault(name[:i] + name[i + 1 :], set()).add(name)
    return {key: frozenset(value) for key, value in index.items()}


def fuzzy_name(word: str) -> str | None:
    """The one known name within one edit of `word`, or None when there is none or more than one target."""
    if len(word) < MIN_FUZZY_LENGTH or not word.isalpha():
        return None
    index = _fuzzy_index()
    candidates: set[str] = set(index.get(word, ()))
    for i in range(len(word)):
        candidates.update(index.get(word[:i] + word[i + 1 :], ()))
    matches = {name for name in candidates if within_one_edit(word, name)}
    vocab = vocabulary()
    targets = {
        vocab.ingredients.get(name) or ("brand", vocab.brands[name].ingredients)
        for name in matches
        if name in vocab.ingredients or name in vocab.brands
    }
    if len(targets) != 1:
        return None
    return matches.pop() if len(matches) == 1 else min(matches)
