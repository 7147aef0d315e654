"""The bench's fleet starts as many processes per service as the phase asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.harness import ServiceFleet

pytestmark = pytest.mark.unit


def fleet(extra_env: dict[str, str]) -> ServiceFleet:
    unused: Any = None
    return ServiceFleet(unused, unused, "scaleout", Path("logs"), extra_env=extra_env)


def test_the_phase_replicas_win_over_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTM_REPLICAS", "2")
    assert fleet({"MTM_REPLICAS": "4"}).replicas == 4
    assert fleet({}).replicas == 2
    monkeypatch.delenv("MTM_REPLICAS")
    assert fleet({}).replicas == 1
