"""`mtm up` without the dev stack installed says what to install instead of failing with a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# The interpreter as a production install sees it: mtm.devstack cannot be imported.
WITHOUT_DEVSTACK = """
import sys
sys.modules["mtm.devstack"] = None
from mtm.cli.main import main
sys.exit(main(["up"]))
"""


def test_mtm_up_names_the_missing_dev_stack_and_how_to_install_it() -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_DEVSTACK], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "mtm-devstack" in result.stderr and "uv sync --all-packages" in result.stderr
    assert "Traceback" not in result.stderr
