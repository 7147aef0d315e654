"""Packaged tables: every row names its source, brand ingredients exist, loading and resolving are fast."""

import csv
from importlib import resources

import pytest

from mtm.drugs import resolve
from mtm.drugs.vocabulary import phrase_key, vocabulary

pytestmark = pytest.mark.unit

TABLES = [
    "ingredient_synonyms.csv",
    "curated_synonyms.csv",
    "brands.csv",
    "salts.csv",
    "dose_forms.csv",
    "rxnorm_codes.csv",
]


@pytest.mark.parametrize("name", TABLES)
def test_every_row_names_its_source(name: str) -> None:
    with resources.files("mtm.drugs").joinpath("data", name).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    assert all(row["source"].strip() for row in rows)


def test_source_notice_is_packaged() -> None:
    notice = resources.files("mtm.drugs").joinpath("data", "SOURCE.md").read_text(encoding="utf-8")
    for name in TABLES:
        assert name in notice


def test_rxnorm_codes_resolve_their_own_display() -> None:
    for code, (ingredients, display) in vocabulary().rxnorm.items():
        by_code = resolve(display, rxnorm_code=code)
        assert by_code.ingredients == ingredients, code


def test_brand_ingredients_are_canonical_ingredient_names() -> None:
    vocab = vocabulary()
    canonical = set(vocab.ingredients.values())
    for brand in vocab.brands.values():
        assert all(ingredient in canonical for ingredient, _ in brand.ingredients), brand.name


@pytest.mark.parametrize(("name", "column"), [("ingredient_synonyms.csv", "synonym"), ("ndc_brands.csv", "name")])
def test_derived_tables_are_stored_as_phrase_keys(name: str, column: str) -> None:
    # vocabulary() reads these keys as they are, to load fast; build_vocabulary.py writes them tokenized.
    with resources.files("mtm.drugs").joinpath("data", name).open(encoding="utf-8", newline="") as handle:
        keys = [row[column] for row in csv.DictReader(handle)]
    assert keys and all(phrase_key(key) == key for key in keys)
