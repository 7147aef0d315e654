"""mtm's fault suite (`make faults`): the stack under kill -9, a NATS leader loss, outages and hostile input.

The suite drives the real services as processes with the tests' own helpers (`tests/support`: service processes,
actor tokens, the webhook receiver), so `tests/` is put on the import path for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

FAULTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = FAULTS_DIR.parent
TESTS_DIR = REPO_ROOT / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))
