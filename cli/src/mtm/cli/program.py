"""`mtm` for the MTM program: a member's status, disenrolment, the CMS file and the alert report."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any, get_args

import rich_click as click

from mtm.cli import output, tool
from mtm.cli.errors import UsageError
from mtm.cli.output import json_option
from mtm.cli.params import DATE, PATIENT
from mtm.cli.reviews import build, send
from mtm.contracts import CommandReply
from mtm.contracts.program import DisenrolmentReason
from mtm.contracts.program_commands import DisenrollMember, GetAlertReport, GetCmsReport, GetProgramStatus
from mtm.contracts.subjects import DISENROLL_MEMBER, GET_ALERT_REPORT, GET_CMS_REPORT, GET_PROGRAM_STATUS

ALERT_COLUMNS = (
    "rule_id",
    "kind",
    "severity",
    "tier",
    "alerts",
    "patients",
    "accepted",
    "overridden",
    "acceptance_rate",
    "override_rate",
)


@click.command("program")
@click.argument("patient", type=PATIENT, help="The member's patient id (p1 or Patient/p1).")
@json_option
def program(patient: str, as_json: bool) -> int:
    """A patient's MTM eligibility, enrolments and adherence as the program holds them."""
    reply = send(GET_PROGRAM_STATUS, build(GetProgramStatus, patient_id=patient))
    return output.show_reply(reply, as_json, lambda r: output.document(r.data, title=f"Patient/{patient}"))


@click.command("disenroll")
@click.argument("patient", type=PATIENT, help="The member's patient id (p1 or Patient/p1).")
@click.option("--year", type=click.IntRange(2000, 2100), required=True, help="The program year.")
@click.option("--reason", type=click.Choice(get_args(DisenrolmentReason)), required=True, help="Why the member left.")
@click.option("--effective", type=DATE, help="When it took effect (default: today).")
@click.option("--note", help="A note (at most 500 characters).")
@json_option
def disenroll(patient: str, year: int, reason: str, effective: date | None, note: str | None, as_json: bool) -> int:
    """Record that an enrolled member left the MTM program this year."""
    command = build(
        DisenrollMember, patient_id=patient, program_year=year, reason=reason, effective=effective, note=note
    )
    return output.show_reply(send(DISENROLL_MEMBER, command), as_json)


@click.group("report")
def report() -> None:
    """MTM program reports."""


@report.command("cms")
@click.option("--year", type=click.IntRange(2000, 2100), required=True, help="The contract year.")
@click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the beneficiary-level file (CSV) here.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print the beneficiary-level file (CSV) on standard output.")
@json_option
def report_cms(year: int, output_path: Path | None, as_csv: bool, as_json: bool) -> int:
    """The CMS beneficiary-level MTM file and a summary with the CMR completion rate.

    For people: the summary (and with -o, the file written); --csv prints the file, --json everything."""
    if as_csv and as_json:
        raise UsageError("--csv and --json do not go together")
    reply = send(GET_CMS_REPORT, GetCmsReport(year=year))
    if not reply.ok or as_json:
        return output.show_reply(reply, as_json)
    data: dict[str, Any] = reply.data if isinstance(reply.data, dict) else {}
    if output_path is not None:
        try:
            with open(output_path, "w", newline="", encoding="utf-8") as out:
                tool.write_csv(out, data.get("rows", []), data.get("columns", []))
        except OSError as exc:
            raise UsageError(f"{output_path}: cannot write it ({exc.strerror})") from exc
        output.note(f"wrote {output_path} ({len(data.get('rows', []))} beneficiaries)")
    if as_csv:
        tool.write_csv(sys.stdout, data.get("rows", []), data.get("columns", []))
        return 0
    output.document(data.get("summary", {}), title=f"CMS MTM report {year}")
    if output_path is None:
        output.note(f"{len(data.get('rows', []))} beneficiaries: -o FILE writes the file, --csv prints it")
    return 0


@report.command("alerts")
@click.option("--since", type=DATE, help="Only alerts since this date (YYYY-MM-DD).")
@click.option("--csv", "as_csv", is_flag=True, help="As CSV on standard output.")
@json_option
def report_alerts(since: date | None, as_csv: bool, as_json: bool) -> int:
    """Alert burden, acceptance and overrides per drug-check rule."""
    if as_csv and as_json:
        raise UsageError("--csv and --json do not go together")
    reply = send(GET_ALERT_REPORT, GetAlertReport(since=since))

    def render(r: CommandReply) -> None:
        rows = output.rows_of(r.data)
        if as_csv:
            tool.write_csv(sys.stdout, rows, ALERT_COLUMNS)
            return
        output.table(ALERT_COLUMNS, ([row.get(c) for c in ALERT_COLUMNS] for row in rows), empty="no alerts")

    return output.show_reply(reply, as_json, render)


COMMANDS = (program, disenroll, report)
