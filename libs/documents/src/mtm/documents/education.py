"""Plain-language patient education per medication, written for mtm from FDA labeling, each entry naming its source."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class Education:
    """What the member reads about one medication; `source` says which FDA labeling it was written from."""

    ingredients: tuple[str, ...]
    name: str
    what_it_is_for: str
    how_to_use_it: str
    watch_for: str
    source: str
    source_url: str


def key(ingredients: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({i.strip().lower() for i in ingredients if i.strip()}))


@cache
def load_education() -> Mapping[tuple[str, ...], Education]:
    """The bundled texts by ingredient set (`data/education.csv`; origins and licence in `data/SOURCE.md`)."""
    path = files("mtm.documents") / "data" / "education.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key(row["ingredients"].split(";")): Education(
            ingredients=key(row["ingredients"].split(";")),
            name=row["name"],
            what_it_is_for=row["what_it_is_for"],
            how_to_use_it=row["how_to_use_it"],
            watch_for=row["watch_for"],
            source=row["source"],
            source_url=row["source_url"],
        )
        for row in rows
    }


def education_for(ingredients: Iterable[str]) -> list[Education]:
    """The text for this combination, else one per ingredient that has one; none for an unknown medication."""
    wanted = key(ingredients)
    texts = load_education()
    if not wanted:
        return []
    if wanted in texts:
        return [texts[wanted]]
    return [texts[(single,)] for single in wanted if (single,) in texts]
