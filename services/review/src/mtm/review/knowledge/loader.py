"""Read the knowledge-base CSV tables from a directory and build the indexed `KnowledgeBase`."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Protocol

from mtm.review.domain.dur.knowledge_base import KnowledgeBase, KnowledgeBaseError, KnowledgeTables

KB_PATH_SETTING = "MTM_REVIEW_KB_PATH"
BUNDLED_DIRECTORY = Path(__file__).parent / "data"
VERSION_FILE = "VERSION"


class KnowledgeSource(Protocol):
    """Anything that yields a knowledge base: a site wrapping a licensed KB implements `load`."""

    def load(self) -> KnowledgeBase: ...


def read_tables(directory: Path) -> KnowledgeTables:
    """Every `<table>.csv` in the directory; a missing table is empty. The directory must hold a VERSION file.

    The VERSION file is what marks a directory as a knowledge base, so a mistyped path fails loudly
    instead of loading an empty KB that would raise no alerts.
    """
    directory = Path(directory)
    version_file = directory / VERSION_FILE
    if not version_file.is_file():
        raise KnowledgeBaseError(f"{directory} is not a knowledge-base directory: no {VERSION_FILE} file")
    tables: dict[str, object] = {"version": version_file.read_text(encoding="utf-8").strip()}
    for table in fields(KnowledgeTables):
        if table.name == "version":
            continue
        path = directory / f"{table.name}.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                tables[table.name] = tuple(csv.DictReader(handle))
    return KnowledgeTables(**tables)  # type: ignore[arg-type]


def load_from_directory(directory: Path | str) -> KnowledgeBase:
    return KnowledgeBase.from_tables(read_tables(Path(directory)))


@cache
def load_bundled() -> KnowledgeBase:
    """The open, sourced KB shipped with mtm (see knowledge/README.md and data/SOURCE.md); loaded once."""
    return load_from_directory(BUNDLED_DIRECTORY)


def load_configured(environ: Mapping[str, str] | None = None) -> KnowledgeBase:
    """The KB at `MTM_REVIEW_KB_PATH` when that setting is present, else the bundled one."""
    settings = os.environ if environ is None else environ
    path = settings.get(KB_PATH_SETTING, "").strip()
    return load_from_directory(path) if path else load_bundled()
