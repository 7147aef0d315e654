"""The README's MTM worked example through `mtm`, against reconciliation, review and program as OS processes on real
NATS JetStream and Postgres: a member's discharge and fills published, the member targeted and enrolled, the CMR
offered, claimed and documented, the member's papers written, the CMS report listing the CMR, the review record a
page at a time; then a pharmacy fill that adds a high-severity interaction opens a targeted review.

Each command runs as a person runs it (its own process, with the token `mtm login` would have saved); the
subprocess timeout only guards against a hang, nothing here asserts how long anything takes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e.test_cli_on_a_stack import _delete_streams, until

# The `mtm` fixture of the CLI tests, here on this module's stack.
from e2e.test_cli_on_a_stack import mtm as mtm
from program.integration.test_program_service import discharge as program_discharge
from program.integration.test_program_service import statin_fill
from support.events import new_patient_id
from support.processes import ServiceProcesses

from mtm.contracts import MedicationEntry
from mtm.devstack.infra import Infrastructure
from mtm.documents.action_plan import STANDARD_HEADINGS
from mtm.platform.status import wait_until_ready

pytestmark = pytest.mark.e2e
RUNNING = ("reconciliation", "review", "program")
RECORD = Path(__file__).resolve().parents[2] / "docs" / "examples" / "cmr-record.json"


@pytest.fixture(scope="module")
def stack(infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infrastructure]:
    """The services the MTM program runs on, as OS processes on streams of their own; timers look often."""
    asyncio.run(_delete_streams(infra.nats_client()))
    services = ServiceProcesses(
        infra,
        tmp_path_factory.mktemp("mtm-program-stack") / "logs",
        extra_env={"MTM_PROGRAM_EVALUATION_EVERY_S": "0.5", "MTM_REVIEW_TIMER_EVERY_S": "0.5"},
    )
    for name in RUNNING:
        services.start(name)
    try:
        asyncio.run(wait_until_ready(infra.nats_client("cli"), RUNNING, timeout_s=180))
        yield infra
    finally:
        codes = services.stop_all()
    assert all(code == 0 for code in codes.values()), codes


def data_of(result: Any) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["data"]


def write(tmp_path: Path, name: str, body: Any) -> str:
    path = tmp_path / name
    path.write_text(body.model_dump_json())
    return str(path)


def test_the_readmes_mtm_worked_example_runs_through_mtm(mtm: Callable[..., Any], tmp_path: Path) -> None:
    member = new_patient_id()
    today = datetime.now(UTC).date()

    # A discharge with three core chronic diseases and seven drugs, and statin fills from the pharmacy (the eighth
    # maintenance drug): the program targets and enrols the member.
    published = mtm("publish-discharge", "--json", write(tmp_path, "discharge.json", program_discharge(member)))
    assert published.returncode == 0, published.stderr
    fills = [
        write(tmp_path, f"fill-{n}.json", statin_fill(member, on))
        for n, on in enumerate((today - timedelta(40), today))
    ]
    filled = mtm("publish-fill", "--json", *fills)
    assert filled.returncode == 0, filled.stderr
    assert all(json.loads(line)["stream"] == "FILL_INTAKE" for line in filled.stdout.splitlines())

    def enrolled() -> Any:
        result = mtm("program", member, "--json")
        return result.returncode == 0 and json.loads(result.stdout)["data"]["enrolments"]

    (enrolment,) = until(enrolled, "the member enrolled by the program")
    assert enrolment["program_year"] == today.year and enrolment["enrolled_on"] == today.isoformat()
    people = mtm("program", f"Patient/{member}")
    assert people.returncode == 0 and "eligib" in people.stdout.lower()

    # The CMR offer on the worklist, due 60 days after enrolment; claimed and documented from the example record.
    def cmr_offered() -> Any:
        return data_of(mtm("tasks", "--reason", "cmr", "--patient", member, "--json"))

    (cmr,) = until(cmr_offered, "a CMR offered to the new member")
    assert cmr["trigger"] == "enrolment" and cmr["status"] == "requested"
    task = cmr["task_id"]
    assert mtm("claim", task).returncode == 0
    # The example record, dated today: a CMR counts for the program year only from the enrolment on.
    record = json.loads(RECORD.read_text())
    record["documentation"]["performed_on"] = today.isoformat()
    record["follow_ups"][0]["due"] = f"{today + timedelta(days=30)}T15:00:00Z"
    (tmp_path / "cmr-record.json").write_text(json.dumps(record))
    completed = mtm("complete", task, "--record", str(tmp_path / "cmr-record.json"))
    assert completed.returncode == 0, completed.stderr

    # The member's papers: the Medication Action Plan and Personal Medication List as HTML and PDF.
    html_path, pdf_path = tmp_path / "member-map.html", tmp_path / "member-map.pdf"
    wrote = mtm("map", member, "--format", "html", "-o", str(html_path), "--member-name", "Mary Example")
    assert wrote.returncode == 0, wrote.stderr
    html = html_path.read_text()
    assert all(heading in html for heading in STANDARD_HEADINGS) and "Mary Example" in html
    assert "Atorvastatin 40 mg tablet" in html  # the record's medication list
    pdf = mtm("map", member, "--format", "pdf", "-o", str(pdf_path), "--contact", "555-0100")
    assert pdf.returncode == 0, pdf.stderr
    assert pdf_path.read_bytes().startswith(b"%PDF")
    assert mtm("delivered", task, "--method", "mail").returncode == 0

    # The CMS beneficiary-level file lists the member with the CMR as documented.
    def reported() -> Any:
        result = mtm("report", "cms", "--year", str(today.year), "--csv")
        assert result.returncode == 0, result.stderr
        rows = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["beneficiary_id"] == member]
        return rows if rows and rows[0]["received_cmr"] == "Y" else None

    (row,) = until(reported, "the member's CMR in the CMS report")
    assert row["mtm_enrollment_date"] == today.isoformat() and row["cmr_dates"] == today.isoformat()
    assert row["offered_cmr"] == "Y" and row["initial_cmr_offer_date"] == today.isoformat()
    assert row["cmr_delivery_method"] and row["cmr_recipient"] and row["cmr_provider_type"]  # from the record
    summary = mtm("report", "cms", "--year", str(today.year))
    assert summary.returncode == 0 and "CMS MTM report" in summary.stdout

    # The review record, a page at a time: the CMR completed, with its outcome-less recommendations.
    first = data_of(mtm("record", member, "--limit", "1", "--json"))
    assert len(first["tasks"]) == 1 and first["next"] is not None
    rest = data_of(mtm("record", member, "--before", first["next"], "--json"))
    tasks = {t["task_id"]: t for page in (first, rest) for t in page["tasks"]}
    assert tasks[task]["status"] == "completed" and tasks[task]["service"] == "cmr"

    # Linezolid (an MAO inhibitor) from the pharmacy on top of the member's sertraline: a new high-severity
    # interaction opens a targeted review.
    fill = statin_fill(member, today)
    linezolid = fill.model_copy(
        update={
            "id": uuid.uuid4(),
            "data": fill.data.model_copy(
                update={"medication": MedicationEntry(text="Linezolid 600 MG Oral Tablet"), "days_supply": 10}
            ),
        }
    )
    assert mtm("publish-fill", write(tmp_path, "linezolid.json", linezolid)).returncode == 0

    def targeted() -> Any:
        found = data_of(mtm("tasks", "--reason", "tmr", "--patient", member, "--json"))
        return [t for t in found if t["trigger"] == "high-alert"]

    (tmr,) = until(targeted, "a TMR opened by the linezolid fill")
    assert tmr["alerts"] >= 1 and tmr["status"] == "requested"
