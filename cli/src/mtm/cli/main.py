"""`mtm`: run the stack, publish discharges, act as a pharmacist's or physician's tool, run the services' commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import date
from pathlib import Path

from mtm.cli import tool
from mtm.cli.reviews import add_review_commands
from mtm.cli.service_commands import ServiceCommandError, add_service_commands
from mtm.cli.stack import nats_url
from mtm.contracts import (
    AnswerReferral,
    ClaimReviewTask,
    CommandReply,
    GetMedicationList,
    ListReferrals,
)
from mtm.contracts.program_commands import DisenrollMember, GetAlertReport, GetCmsReport, GetProgramStatus
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    DISENROLL_MEMBER,
    GET_ALERT_REPORT,
    GET_CMS_REPORT,
    GET_MEDICATION_LIST,
    GET_PROGRAM_STATUS,
    LIST_REFERRALS,
)


def say(line: str) -> None:
    print(line, flush=True)


def print_reply(reply: CommandReply) -> int:
    print(json.dumps(reply.model_dump(mode="json"), indent=2))
    return 0 if reply.ok else 1


def cmd_up(args: argparse.Namespace) -> int:
    try:
        from mtm.cli.up import up
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("mtm.devstack"):
            raise
        print(
            "mtm up: the dev stack (mtm-devstack: embedded NATS and Postgres) is not installed. In a checkout, "
            "`make run` or `uv sync --all-packages` installs it with the dev dependency group; elsewhere, "
            "install mtm-devstack next to mtm-cli.",
            file=sys.stderr,
        )
        return 2
    if not args.demo:
        return up(say)
    from mtm.cli.demo import DemoRun

    demo = DemoRun(say).start()
    try:
        return up(say, extra_env=demo.env(), demo=demo.run, exit_after_demo=args.exit_after_demo)
    finally:
        demo.stop()


def cmd_publish(args: argparse.Namespace) -> int:
    for line in asyncio.run(tool.publish_discharges(nats_url(), [Path(p) for p in args.files])):
        print(json.dumps(line))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    files = sorted(Path(args.directory).glob("*.json"))
    if not files:
        raise tool.ToolError(f"{args.directory}: no Synthea bundles (*.json) found")
    result = asyncio.run(tool.replay_synthea(nats_url(), files, args.limit))
    print(json.dumps(result))
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from mtm.cli.identity import LoginError, login, read_password, token_file

    try:
        who = login(args.user, read_password(), args.url)
    except LoginError as exc:
        raise tool.ToolError(f"login refused: {exc}") from exc
    practitioner = f", practitioner {who.practitioner_id}" if who.practitioner_id else ""
    say(f"logged in as {who.user_id} ({who.role}{practitioner}) until {who.expires_at}; token in {token_file()}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from mtm.cli.identity import add_user, read_password
    from mtm.web.accounts import AccountError

    try:
        add_user(args.name, args.role, args.practitioner_id, read_password("Password for the new account: "))
    except AccountError as exc:
        raise tool.ToolError(str(exc)) from exc
    except OSError as exc:
        raise tool.ToolError(f"cannot reach the web app's database ({type(exc).__name__}): is the stack up?") from exc
    say(f"account {args.name} added ({args.role})")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from mtm.cli.identity import dumps, list_users

    print(dumps(list_users()))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from mtm.cli.rebuild import rebuild_services
    from mtm.contracts.admin import SERVICES

    services = list(SERVICES) if args.all else [args.service]
    if not args.all and args.service not in SERVICES:
        raise tool.ToolError(f"no service named {args.service!r} (one of {', '.join(SERVICES)}, or --all)")
    return asyncio.run(rebuild_services(nats_url(), services))


def cmd_erase(args: argparse.Namespace) -> int:
    from mtm.contracts.admin import ErasePatient
    from mtm.contracts.subjects import ERASE_PATIENT

    patient = args.patient.removeprefix("Patient/")
    command = ErasePatient(patient_id=patient, reason=args.reason)
    return print_reply(asyncio.run(tool.request(nats_url(), ERASE_PATIENT, command)))


def cmd_claim(args: argparse.Namespace) -> int:
    command = ClaimReviewTask(task_id=tool.parse_uuid(args.task, "task"))
    return print_reply(asyncio.run(tool.request(nats_url(), CLAIM_REVIEW_TASK, command)))


def cmd_referrals(args: argparse.Namespace) -> int:
    query = ListReferrals(physician_id=args.physician, status=args.status)
    return print_reply(asyncio.run(tool.request(nats_url(), LIST_REFERRALS, query)))


def cmd_answer(args: argparse.Namespace) -> int:
    command = AnswerReferral(
        referral_id=tool.parse_uuid(args.referral, "referral"),
        decision=args.decision,
        note=args.note,
    )
    return print_reply(asyncio.run(tool.request(nats_url(), ANSWER_REFERRAL, command)))


def cmd_medlist(args: argparse.Namespace) -> int:
    query = GetMedicationList(patient_id=args.patient, format="fhir" if args.fhir else "mtm")
    return print_reply(asyncio.run(tool.request(nats_url(), GET_MEDICATION_LIST, query)))


def cmd_publish_fill(args: argparse.Namespace) -> int:
    for line in asyncio.run(tool.publish_fills(nats_url(), [Path(p) for p in args.files])):
        print(json.dumps(line))
    return 0


def cmd_program(args: argparse.Namespace) -> int:
    return print_reply(
        asyncio.run(tool.request(nats_url(), GET_PROGRAM_STATUS, GetProgramStatus(patient_id=args.patient)))
    )


def cmd_disenroll(args: argparse.Namespace) -> int:
    command = DisenrollMember(
        patient_id=args.patient, program_year=args.year, reason=args.reason, effective=args.effective, note=args.note
    )
    return print_reply(asyncio.run(tool.request(nats_url(), DISENROLL_MEMBER, command)))


def cmd_report_cms(args: argparse.Namespace) -> int:
    reply = asyncio.run(tool.request(nats_url(), GET_CMS_REPORT, GetCmsReport(year=args.year)))
    if not reply.ok:
        return print_reply(reply)
    data = reply.data or {}
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        tool.write_csv(out, data["rows"], data["columns"])
    finally:
        if args.output:
            out.close()
    print(json.dumps(data["summary"], indent=2), file=sys.stderr if not args.output else sys.stdout)
    return 0


def cmd_report_alerts(args: argparse.Namespace) -> int:
    reply = asyncio.run(tool.request(nats_url(), GET_ALERT_REPORT, GetAlertReport(since=args.since)))
    if args.json or not reply.ok:
        return print_reply(reply)
    columns = ("rule_id", "kind", "severity", "tier", "alerts", "patients", "accepted", "overridden")
    tool.write_csv(sys.stdout, reply.data or [], (*columns, "acceptance_rate", "override_rate"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start NATS, Postgres and the services; Ctrl-C stops everything")
    up.add_argument("--demo", action="store_true", help="also run one discharge through to a physician")
    up.add_argument("--exit-after-demo", action="store_true", help="stop the stack when the demo is done")
    up.set_defaults(run=cmd_up)

    publish = sub.add_parser("publish-discharge", help="publish discharges (native JSON or FHIR R4 Bundle)")
    publish.add_argument("files", nargs="+")
    publish.set_defaults(run=cmd_publish)

    replay = sub.add_parser("replay-synthea", help="publish the Synthea population's discharges (FHIR bundles)")
    replay.add_argument("directory", nargs="?", default="data/synthea/bundles")
    replay.add_argument("--limit", type=int, help="at most this many discharges")
    replay.set_defaults(run=cmd_replay)

    login = sub.add_parser(
        "login", help="sign in at the web app (password from MTM_PASSWORD or stdin); commands then act as you"
    )
    login.add_argument("user", help="account name, e.g. ana")
    login.add_argument("--url", help="the web app (default: MTM_WEB_URL, else the stack `mtm up` started)")
    login.set_defaults(run=cmd_login)

    user = sub.add_parser("user", help="accounts of the web app")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    user_add = user_sub.add_parser("add", help="add an account (password from MTM_PASSWORD or stdin)")
    user_add.add_argument("name")
    user_add.add_argument("--role", required=True, choices=["pharmacist", "physician", "admin"])
    user_add.add_argument("--practitioner-id", help="FHIR Practitioner id (required for a physician)")
    user_add.set_defaults(run=cmd_user_add)
    user_list = user_sub.add_parser("list", help="every account, with its role")
    user_list.set_defaults(run=cmd_user_list)

    rebuild = sub.add_parser(
        "rebuild", help="rebuild a service's tables from the patient log while the stack runs, then swap them in"
    )
    rebuild.add_argument("service", nargs="?", help="reconciliation, review, referral, notify or program")
    rebuild.add_argument("--all", action="store_true", help="every service, one after the other")
    rebuild.set_defaults(run=cmd_rebuild)

    erase = sub.add_parser(
        "erase", help="forget a patient everywhere: their key is destroyed, every service deletes their rows (admin)"
    )
    erase.add_argument("patient", help="the patient id (or Patient/<id>)")
    erase.add_argument("--reason", required=True, help="why, e.g. 'request of the patient'")
    erase.set_defaults(run=cmd_erase)

    claim = sub.add_parser("claim", help="claim a review task as a pharmacist")
    claim.add_argument("task")
    claim.set_defaults(run=cmd_claim)

    referrals = sub.add_parser("referrals", help="referrals, optionally for one physician")
    referrals.add_argument("--physician")
    referrals.add_argument("--status", choices=["requested", "accepted", "declined", "modified"])
    referrals.set_defaults(run=cmd_referrals)

    answer = sub.add_parser("answer", help="answer a referral as the physician")
    answer.add_argument("referral")
    answer.add_argument("--decision", required=True, choices=["accepted", "declined", "modified"])
    answer.add_argument("--note")
    answer.set_defaults(run=cmd_answer)

    medlist = sub.add_parser("medlist", help="a patient's current medication list")
    medlist.add_argument("patient")
    medlist.add_argument("--fhir", action="store_true", help="as a FHIR R4 List of MedicationStatements")
    medlist.set_defaults(run=cmd_medlist)

    fill = sub.add_parser(
        "publish-fill", help="publish pharmacy fills (native JSON or FHIR R4 Bundle of MedicationDispense)"
    )
    fill.add_argument("files", nargs="+")
    fill.set_defaults(run=cmd_publish_fill)

    program = sub.add_parser("program", help="a patient's MTM eligibility, enrolments and adherence")
    program.add_argument("patient")
    program.set_defaults(run=cmd_program)

    disenroll = sub.add_parser("disenroll", help="record that an enrolled member left the MTM program this year")
    disenroll.add_argument("patient")
    disenroll.add_argument("--year", type=int, required=True, help="program year")
    disenroll.add_argument("--reason", required=True, choices=["opted-out", "death", "plan-disenrolled", "other"])
    disenroll.add_argument("--effective", type=date.fromisoformat, help="YYYY-MM-DD (default: today)")
    disenroll.add_argument("--note")
    disenroll.set_defaults(run=cmd_disenroll)

    report = sub.add_parser("report", help="MTM program reports").add_subparsers(dest="report", required=True)
    cms = report.add_parser("cms", help="the CMS beneficiary-level MTM file (CSV) and the CMR completion rate")
    cms.add_argument("--year", type=int, required=True, help="contract year")
    cms.add_argument("-o", "--output", help="write the CSV here (default: standard output; summary on stderr)")
    cms.set_defaults(run=cmd_report_cms)
    alerts = report.add_parser("alerts", help="alert burden, acceptance and overrides per drug-check rule")
    alerts.add_argument("--since", type=date.fromisoformat, help="YYYY-MM-DD")
    alerts.add_argument("--json", action="store_true")
    alerts.set_defaults(run=cmd_report_alerts)

    # Reviews: worklist, release, reassign, complete with documentation, overrides, outcomes, MAP, FHIR export.
    add_review_commands(sub)

    # `mtm check`, `mtm reconcile`, ...: commands the services register (entry points), run without a stack.
    add_service_commands(sub, taken=set(sub.choices))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (tool.ToolError, ServiceCommandError) as exc:
        print(f"mtm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
