"""The bundled knowledge base's tables as tests read them, and the loader's own reading of drug tokens."""

from __future__ import annotations

import csv
from functools import cache

from mtm.review.domain.dur.knowledge_base import _Builder
from mtm.review.knowledge import BUNDLED_DIRECTORY, read_tables


@cache
def token_reader() -> _Builder:
    """The loader's own reading of tokens (`class:`, `role:`, `a;b`, `a&b`, `a!b`), so cases expand as rules do."""
    return _Builder(read_tables(BUNDLED_DIRECTORY))


def bundled_rows(table: str) -> list[dict[str, str]]:
    """The rows of one bundled table (`label_conditions`), as the CSV holds them."""
    with (BUNDLED_DIRECTORY / f"{table}.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
