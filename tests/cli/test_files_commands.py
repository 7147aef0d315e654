"""`mtm check` and `mtm reconcile`: one JSON line per file, errors on their own line, exit code 1 on any error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parents[1] / "reconciliation" / "data"
SYNTHEA = sorted((Path(__file__).resolve().parents[2] / "data" / "synthea" / "bundles").glob("*.json"))


def mtm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mtm.cli.main", *args], capture_output=True, text=True, timeout=120)


def mtm_json(*args: str) -> subprocess.CompletedProcess[str]:
    """The command for scripts: one JSON object per file on stdout."""
    return mtm(*args[:1], "--json", *args[1:])


@pytest.fixture
def bad_files(tmp_path: Path) -> list[str]:
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Bundle", "type": "collection", "entry": [')
    not_bundle = tmp_path / "patient.json"
    not_bundle.write_text('{"resourceType": "Patient", "id": "x"}')
    return [str(broken), str(not_bundle), str(tmp_path / "missing.json")]


def test_check_prints_alerts_per_file_and_keeps_going_after_errors(bad_files: list[str]) -> None:
    good = str(DATA / "discharge_mixed.json")
    result = mtm_json("check", bad_files[0], good, *bad_files[1:])
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 1
    assert [line["source"] for line in lines] == [bad_files[0], good, *bad_files[1:]]
    assert set(lines[0]) == {"source", "error"} and "JSON" in lines[0]["error"]
    assert "Bundle" in lines[2]["error"] or "resourceType" in lines[2]["error"]
    assert "read" in lines[3]["error"]
    checked = lines[1]
    assert checked["patient"] == "p1"
    kinds = {a["kind"] for a in checked["alerts"]}
    assert "duplication" in kinds  # atorvastatin twice on the discharge list
    for alert in checked["alerts"]:
        assert set(alert) == {"kind", "severity", "tier", "ingredients", "message", "source"}
        assert alert["severity"] in {"high", "moderate", "low"} and alert["tier"] in {"interruptive", "passive"}
        assert all(i == i.lower() for i in alert["ingredients"])


def test_check_exits_zero_when_every_file_is_valid() -> None:
    result = mtm_json("check", *map(str, SYNTHEA[:20]))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 20


def test_reconcile_prints_items_and_discrepancies(bad_files: list[str]) -> None:
    result = mtm_json("reconcile", str(DATA / "discharge_mixed.json"), bad_files[0])
    good, bad = (json.loads(line) for line in result.stdout.splitlines())
    assert result.returncode == 1
    expected = json.loads((DATA / "discharge_mixed.report.json").read_text())
    assert good == {"source": str(DATA / "discharge_mixed.json"), **expected}
    assert {d["type"] for d in good["discrepancies"]} == {
        "omission",
        "dose",
        "frequency",
        "route",
        "formulation",
        "duplication",
        "commission",
    }
    assert set(bad) == {"source", "error"}


def test_check_and_reconcile_are_the_services_own_commands_found_through_entry_points() -> None:
    from importlib.metadata import entry_points

    commands = {entry.name: entry for entry in entry_points(group="mtm.commands")}
    assert commands["check"].dist is not None and commands["check"].dist.name == "mtm-review"
    assert commands["reconcile"].dist is not None and commands["reconcile"].dist.name == "mtm-reconciliation"
    [reader] = entry_points(group="mtm.readers", name="discharge-bundle")
    assert reader.dist is not None and reader.dist.name == "mtm-reconciliation"
    assert "check" in mtm("--help").stdout


def test_a_service_tool_with_its_own_arguments_runs_as_an_mtm_command() -> None:
    """`mtm kb coverage` belongs to review (entry point group `mtm.tools`); the CLI only dispatches to it."""
    found = mtm("kb", "coverage", "--drug", "atorvastatin")
    assert found.returncode == 0, found.stderr
    assert "atorvastatin" in found.stdout and "LIPITOR" in found.stdout
    usage = mtm("kb")
    assert usage.returncode == 2 and "coverage" in usage.stderr


def test_the_readme_cmr_record_is_a_valid_completion() -> None:
    """docs/examples/cmr-record.json, used in the README's worked example, is what `mtm complete --record` sends."""
    import uuid

    from mtm.contracts import CompleteReviewTask

    body = json.loads((Path(__file__).resolve().parents[2] / "docs" / "examples" / "cmr-record.json").read_text())
    command = CompleteReviewTask.model_validate({**body, "task_id": str(uuid.uuid4())})
    assert command.documentation is not None and len(command.documentation.problems) == 2
    linked = {r.problem_id for r in command.recommendations}
    assert linked == {p.problem_id for p in command.documentation.problems}


def test_an_export_reads_every_page_of_the_review_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mtm fhir export` joins the record's pages: each page's own sections, the rest once."""
    import asyncio

    from mtm.cli import reviews, tool
    from mtm.contracts import CommandReply

    NEXT = "1796025192345678.49661783-142b-4b17-bf12-1f51411c16e6"
    pages = {
        None: {"member": {"enrolled": True}, "scheduled": [{"trigger": "quarterly"}], "next": NEXT,
               "tasks": [{"task_id": "t3"}, {"task_id": "t2"}], "recommendations": [{"task_id": "t2"}],
               "overrides": [], "follow_ups": [{"task_id": "t3"}], "action_plans": []},
        NEXT: {"member": {"enrolled": True}, "scheduled": [{"trigger": "quarterly"}], "next": None,
                "tasks": [{"task_id": "t1"}], "recommendations": [{"task_id": "t1"}],
                "overrides": [{"task_id": "t1"}], "follow_ups": [], "action_plans": [{"task_id": "t1"}]},
    }  # fmt: skip
    asked = []

    async def ask(nc, subject, query, token):
        asked.append((query.limit, query.before))
        return CommandReply(outcome="accepted", data=pages[query.before])

    monkeypatch.setattr(tool, "ask", ask)
    whole = asyncio.run(reviews._whole_review_record(None, "p1", "token"))
    assert asked == [(50, None), (50, NEXT)]
    assert [t["task_id"] for t in whole["tasks"]] == ["t3", "t2", "t1"]
    assert [r["task_id"] for r in whole["recommendations"]] == ["t2", "t1"]
    assert (len(whole["overrides"]), len(whole["follow_ups"]), len(whole["action_plans"])) == (1, 1, 1)
    assert whole["scheduled"] == [{"trigger": "quarterly"}] and whole["next"] is None
