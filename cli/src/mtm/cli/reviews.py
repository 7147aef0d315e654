"""`mtm` for the pharmacist's reviews: worklist, release and reassign, documentation, overrides, outcomes, the MAP
and PML as HTML, PDF or FHIR, and a patient's FHIR export; all through NATS with the actor token."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mtm.cli import tool
from mtm.cli.stack import nats_url
from mtm.contracts import (
    CommandReply,
    CompleteReviewTask,
    FollowUpRequest,
    GetActionPlan,
    GetMedicationList,
    GetReviewRecord,
    ListAlertRuleStats,
    ListNotifications,
    ListReferrals,
    ListReviewTasks,
    OverrideAlert,
    ReassignReviewTask,
    Recommendation,
    RecordActionPlanDelivery,
    RecordRecommendationOutcome,
    ReleaseReviewTask,
)
from mtm.contracts.documentation import ActionPlanDocument
from mtm.contracts.subjects import (
    COMPLETE_REVIEW_TASK,
    GET_ACTION_PLAN,
    GET_MEDICATION_LIST,
    GET_REVIEW_RECORD,
    LIST_ALERT_RULE_STATS,
    LIST_NOTIFICATIONS,
    LIST_REFERRALS,
    LIST_REVIEW_TASKS,
    OVERRIDE_ALERT,
    REASSIGN_REVIEW_TASK,
    RECORD_ACTION_PLAN_DELIVERY,
    RECORD_RECOMMENDATION_OUTCOME,
    RELEASE_REVIEW_TASK,
)

REASONS = {
    "post-discharge": "post-discharge-review",
    "cmr": "comprehensive-medication-review",
    "tmr": "targeted-medication-review",
}


def _send(subject: str, body: BaseModel) -> CommandReply:
    return asyncio.run(tool.request(nats_url(), subject, body))


def _print(reply: CommandReply) -> int:
    print(json.dumps(reply.model_dump(mode="json"), indent=2))
    return 0 if reply.ok else 1


def _build(model: type[BaseModel], **fields: Any) -> BaseModel:
    """The command from the flags; a mistake is told the way a service would tell it, naming the field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        from mtm.platform.consumer import describe_invalid

        raise tool.ToolError(describe_invalid(exc)) from exc


def cmd_tasks(args: argparse.Namespace) -> int:
    query = _build(
        ListReviewTasks,
        status=args.status,
        mine=args.mine,
        owner=args.owner,
        reason=REASONS.get(args.reason) if args.reason else None,
        patient_id=args.patient,
        overdue=True if args.overdue else None,
        offset=args.offset,
        limit=args.limit,
    )
    reply = _send(LIST_REVIEW_TASKS, query)
    if args.json or not reply.ok:
        return _print(reply)
    for task in reply.data or []:
        due = (task["due"] or "-")[:16]
        late = " OVERDUE" if task["overdue"] else ""
        print(
            f"{task['task_id']}  {task['priority']:<7} due {due}{late}  {task['reason']:<32} {task['status']:<12} "
            f"{task['patient']}  alerts {task['alerts']}  discrepancies {task['discrepancies']}  "
            f"owner {task['owner'] or '-'}"
        )
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    return _print(
        _send(RELEASE_REVIEW_TASK, ReleaseReviewTask(task_id=tool.parse_uuid(args.task, "task"), reason=args.reason))
    )


def cmd_reassign(args: argparse.Namespace) -> int:
    command = _build(ReassignReviewTask, task_id=tool.parse_uuid(args.task, "task"), pharmacist_id=args.to)
    return _print(_send(REASSIGN_REVIEW_TASK, command))


def _json_file(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise tool.ToolError(f"{path}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise tool.ToolError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def cmd_complete(args: argparse.Namespace) -> int:
    """The flags, or a whole documented review from `--record FILE` (documentation, recommendations, follow-ups)."""
    body: dict[str, Any] = _json_file(args.record) if args.record else {}
    if not isinstance(body, dict):
        raise tool.ToolError(f"{args.record}: expected a JSON object")
    recommendations = list(body.get("recommendations", []))
    for texts, refer in ((args.recommend, False), (args.refer, True)):
        recommendations += [
            {"recommendation_id": str(uuid.uuid4()), "text": text, "needs_prescriber": refer} for text in texts
        ]
    for rec in recommendations:
        rec.setdefault("recommendation_id", str(uuid.uuid4()))
    follow_ups = list(body.get("follow_ups", []))
    for when, reason in args.follow_up:
        follow_ups.append({"due": _moment(when), "reason": reason})
    command = _build(
        CompleteReviewTask,
        task_id=tool.parse_uuid(args.task, "task"),
        note=args.note or body.get("note"),
        recommendations=tuple(Recommendation.model_validate(r) for r in recommendations),
        documentation=body.get("documentation"),
        follow_ups=tuple(FollowUpRequest.model_validate(f) for f in follow_ups),
    )
    return _print(_send(COMPLETE_REVIEW_TASK, command))


def _moment(value: str) -> str:
    """A date (`2027-01-15`, due at the start of that day, UTC) or a date-time with its zone."""
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC).isoformat()
    except ValueError:
        return value


def cmd_override(args: argparse.Namespace) -> int:
    command = _build(
        OverrideAlert,
        task_id=tool.parse_uuid(args.task, "task"),
        alert=args.alert,
        reason_code=args.reason_code,
        reason=args.reason,
    )
    return _print(_send(OVERRIDE_ALERT, command))


def cmd_outcome(args: argparse.Namespace) -> int:
    command = _build(
        RecordRecommendationOutcome,
        recommendation_id=tool.parse_uuid(args.recommendation, "recommendation"),
        outcome=args.outcome,
        note=args.note,
    )
    return _print(_send(RECORD_RECOMMENDATION_OUTCOME, command))


def cmd_delivered(args: argparse.Namespace) -> int:
    command = _build(
        RecordActionPlanDelivery,
        task_id=tool.parse_uuid(args.task, "task"),
        method=args.method,
        delivered_on=args.on or datetime.now(UTC).date().isoformat(),
    )
    return _print(_send(RECORD_ACTION_PLAN_DELIVERY, command))


def cmd_record(args: argparse.Namespace) -> int:
    return _print(_send(GET_REVIEW_RECORD, _build(GetReviewRecord, patient_id=args.patient)))


def cmd_alert_stats(args: argparse.Namespace) -> int:
    return _print(_send(LIST_ALERT_RULE_STATS, ListAlertRuleStats(offset=args.offset, limit=args.limit)))


def _action_plan(patient: str, task: str | None) -> ActionPlanDocument:
    query = _build(GetActionPlan, patient_id=patient, task_id=tool.parse_uuid(task, "task") if task else None)
    reply = _send(GET_ACTION_PLAN, query)
    if not reply.ok:
        raise tool.ToolError(f"{reply.outcome}: {reply.message}")
    return ActionPlanDocument.model_validate(reply.data)


def cmd_map(args: argparse.Namespace) -> int:
    """The CMR's written summary for the member, written to a file (PDF and HTML) or as a FHIR Bundle."""
    from mtm.documents import Letterhead, render_html, render_pdf

    document = _action_plan(args.patient, args.task)
    letterhead = Letterhead(
        member_name=args.member_name,
        birth_date=date.fromisoformat(args.birth_date) if args.birth_date else None,
        program_name=args.program_name,
        provider_name=args.provider_name,
        contact=args.contact,
    )
    if args.format == "fhir":
        from mtm.fhir.export import action_plan_bundle

        content: bytes = json.dumps(action_plan_bundle(document), indent=2).encode()
    elif args.format == "html":
        content = render_html(document, letterhead).encode()
    else:
        content = render_pdf(document, letterhead)
    _write(args.output, content)
    return 0


def _write(output: str | None, content: bytes) -> None:
    if output in (None, "-"):
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    Path(output).write_bytes(content)
    print(f"wrote {output} ({len(content)} bytes)", file=sys.stderr)


def _data(reply: CommandReply, what: str, missing_ok: bool = True) -> Any:
    if reply.ok:
        return reply.data
    if reply.outcome == "not_found" and missing_ok:
        return None
    raise tool.ToolError(f"{what}: {reply.outcome}: {reply.message}")


def cmd_fhir_export(args: argparse.Namespace) -> int:
    """Everything mtm holds for the patient, from each service, as one FHIR R4 Bundle checked before it is printed."""
    from mtm.fhir.errors import BundleError
    from mtm.fhir.export import check_bundle, patient_bundle

    patient = args.patient
    record = _data(_send(GET_REVIEW_RECORD, _build(GetReviewRecord, patient_id=patient)), "review")
    medication_list = _data(_send(GET_MEDICATION_LIST, GetMedicationList(patient_id=patient)), "reconciliation")
    referrals = _data(_send(LIST_REFERRALS, ListReferrals(patient_id=patient, limit=1000)), "referral") or []
    notifications = _data(_send(LIST_NOTIFICATIONS, ListNotifications(patient_id=patient, limit=1000)), "notify")
    plan = _data(_send(GET_ACTION_PLAN, GetActionPlan(patient_id=patient)), "review")
    bundle = patient_bundle(
        patient,
        review_record=record,
        medication_list=medication_list,
        referrals=referrals,
        notifications=notifications or [],
        action_plan=ActionPlanDocument.model_validate(plan) if plan else None,
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    try:
        check_bundle(bundle)
    except BundleError as exc:
        raise tool.ToolError(f"the export is not a valid FHIR bundle: {exc}") from exc
    _write(args.output, (json.dumps(bundle, indent=2) + "\n").encode())
    return 0


def add_review_commands(sub: Any) -> None:
    def command(name: str, run: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help)
        parser.set_defaults(run=run)
        return parser

    tasks = command("tasks", cmd_tasks, "the review worklist: priority first, then due time")
    tasks.add_argument("--status", choices=["requested", "in-progress", "completed"])
    tasks.add_argument("--mine", action="store_true", help="only tasks held by the pharmacist logged in")
    tasks.add_argument("--owner", help="only tasks held by this pharmacist")
    tasks.add_argument("--reason", choices=sorted(REASONS))
    tasks.add_argument("--patient")
    tasks.add_argument("--overdue", action="store_true")
    tasks.add_argument("--offset", type=int, default=0)
    tasks.add_argument("--limit", type=int, default=50)
    tasks.add_argument("--json", action="store_true")

    release = command("release", cmd_release, "put a claimed task back in the queue (its owner or an admin)")
    release.add_argument("task")
    release.add_argument("--reason")

    reassign = command("reassign", cmd_reassign, "hand a task to another pharmacist (its owner or an admin)")
    reassign.add_argument("task")
    reassign.add_argument("--to", required=True, help="the pharmacist's practitioner id")

    complete = command("complete", cmd_complete, "complete a claimed review task, documenting it")
    complete.add_argument("task")
    complete.add_argument("--note")
    complete.add_argument("--recommend", action="append", default=[], help="a recommendation for the patient")
    complete.add_argument("--refer", action="append", default=[], help="a recommendation that needs the prescriber")
    complete.add_argument(
        "--follow-up", nargs=2, action="append", default=[], metavar=("WHEN", "REASON"), help="e.g. 2027-01-15 'BP'"
    )
    complete.add_argument(
        "--record", metavar="FILE", help="JSON: documentation, recommendations, follow_ups, note (see the README)"
    )

    override = command("override", cmd_override, "override an alert of a task, with the reason")
    override.add_argument("task")
    override.add_argument("--alert", type=int, required=True, help="its position in the task (0 = first)")
    override.add_argument(
        "--reason-code",
        required=True,
        choices=["benefit-outweighs-risk", "tolerated-previously", "will-monitor", "not-clinically-relevant", "other"],
    )
    override.add_argument("--reason", required=True)

    outcome = command("outcome", cmd_outcome, "record what became of a recommendation")
    outcome.add_argument("recommendation")
    outcome.add_argument("--outcome", required=True, choices=["accepted", "declined", "modified", "no-response"])
    outcome.add_argument("--note")

    delivered = command("delivered", cmd_delivered, "record that a CMR's action plan and medication list went out")
    delivered.add_argument("task")
    delivered.add_argument("--method", required=True, choices=["in-person", "mail", "electronic", "fax"])
    delivered.add_argument("--on", help="the date (YYYY-MM-DD); today when absent")

    record = command("record", cmd_record, "everything review holds for a patient, as JSON")
    record.add_argument("patient")

    stats = command("alert-stats", cmd_alert_stats, "per drug-check rule: fired, overridden, acted on, accepted")
    stats.add_argument("--offset", type=int, default=0)
    stats.add_argument("--limit", type=int, default=100)

    map_ = command("map", cmd_map, "the CMR's Medication Action Plan and Personal Medication List")
    map_.add_argument("patient")
    map_.add_argument("--format", choices=["html", "pdf", "fhir"], default="pdf")
    map_.add_argument("-o", "--output", help="file to write (stdout when absent or -)")
    map_.add_argument("--task", help="a given CMR task (the latest CMR when absent)")
    map_.add_argument("--member-name", help="printed on the papers, never stored")
    map_.add_argument("--birth-date", help="YYYY-MM-DD, printed on the papers")
    map_.add_argument("--provider-name", help="who signs the letter")
    map_.add_argument("--contact", help="phone number and hours the member can call")
    map_.add_argument("--program-name", default="Medication Therapy Management Program")

    fhir = sub.add_parser("fhir", help="FHIR R4 out")
    fhir_sub = fhir.add_subparsers(dest="fhir_command", required=True)
    export = fhir_sub.add_parser("export", help="one FHIR R4 Bundle of everything mtm holds for a patient")
    export.add_argument("patient")
    export.add_argument("-o", "--output", help="file to write (stdout when absent or -)")
    export.set_defaults(run=cmd_fhir_export)
