"""`mtm eligibility` and `mtm adherence` on FHIR member bundles: one JSON line per file, errors as `mtm check`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parents[1] / "data"


def mtm(*args: str) -> subprocess.CompletedProcess[str]:
    """The command for scripts (`--json`): one JSON object per file on stdout."""
    command = [sys.executable, "-m", "mtm.cli.main", args[0], "--json", *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_eligibility_reads_conditions_orders_claims_and_the_dmp_flag(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = mtm("eligibility", str(DATA / "member_eligible.json"), str(broken), str(DATA / "member_dmp.json"))
    eligible, error, dmp = (json.loads(line) for line in result.stdout.splitlines())
    assert result.returncode == 1
    assert set(eligible) == {"source", "patient", "eligible", "basis", "criteria", "reasons"}
    assert eligible["eligible"] and eligible["patient"] == "member-1"
    criteria = eligible["criteria"]
    # The resolved asthma does not count; the 10-day amoxicillin course is not a maintenance drug.
    assert criteria["chronic_diseases"] == ["diabetes", "dyslipidemia", "hypertension"]
    assert len(criteria["maintenance_drugs"]) == 8 and "amoxicillin" not in criteria["maintenance_drugs"]
    assert criteria["cost_basis"] == "claims" and criteria["program_year"] == 2025
    assert criteria["annual_cost_threshold"] == 1623.0
    assert set(error) == {"source", "error"} and "JSON" in error["error"]
    assert dmp["eligible"] and dmp["basis"] == "drug-management-program"


def test_adherence_prints_pdc_per_class_for_the_year() -> None:
    result = mtm("adherence", str(DATA / "member_eligible.json"), "--year", "2025")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    # Statins Oct 3 - Nov 1 and Dec 2 - Dec 31 of Oct 3 - Dec 31; lisinopril covers every day.
    assert line["pdc"] == {"statins": round(60 / 90, 4), "ras-antagonists": 1.0}
    assert line["below_threshold"] == ["statins"]
    statuses = {m["drug_class"]: m["status"] for m in line["measures"]}
    assert statuses["diabetes-non-insulin"] == "too-few-fills"
    older = json.loads(mtm("adherence", str(DATA / "member_eligible.json"), "--year", "2024").stdout)
    assert older["pdc"] == {}
