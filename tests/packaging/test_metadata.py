"""Every package of the workspace says its licence, its authors and where it lives, as the LICENSE file does."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO_ROOT = Path(__file__).resolve().parents[2]


def pyprojects() -> list[Path]:
    return sorted(
        {REPO_ROOT / "pyproject.toml", *REPO_ROOT.glob("*/pyproject.toml"), *REPO_ROOT.glob("*/*/pyproject.toml")}
    )


def test_the_licence_is_apache_2() -> None:
    assert (REPO_ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]


@pytest.mark.parametrize("path", pyprojects(), ids=lambda p: str(p.parent.relative_to(REPO_ROOT)) or "root")
def test_each_package_names_its_licence_authors_and_urls(path: Path) -> None:
    project = tomllib.loads(path.read_text())["project"]
    assert project.get("license") == "Apache-2.0", path
    assert project.get("authors"), path
    assert {"Homepage", "Source", "Issues"} <= set(project.get("urls", {})), path
