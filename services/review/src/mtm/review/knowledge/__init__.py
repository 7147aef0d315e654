"""Load the DUR knowledge base: the bundled open KB, or a site's own directory of files in the same formats."""

from mtm.review.knowledge.loader import (
    BUNDLED_DIRECTORY,
    KB_PATH_SETTING,
    KnowledgeSource,
    load_bundled,
    load_configured,
    load_from_directory,
    read_tables,
)

__all__ = [
    "BUNDLED_DIRECTORY",
    "KB_PATH_SETTING",
    "KnowledgeSource",
    "load_bundled",
    "load_configured",
    "load_from_directory",
    "read_tables",
]
