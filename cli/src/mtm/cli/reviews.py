"""`mtm` for the pharmacist's reviews: worklist, claim, release and reassign, documentation, overrides, outcomes,
the MAP and PML as HTML, PDF or FHIR, and a patient's FHIR export; all through NATS with the actor token."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, get_args

import rich_click as click
from pydantic import BaseModel, ValidationError

from mtm.cli import output, tool
from mtm.cli.errors import CliError, Refused, UsageError
from mtm.cli.output import json_option
from mtm.cli.params import DATE, PATIENT, PRACTITIONER, RECOMMENDATION, TASK
from mtm.cli.stack import nats_client
from mtm.contracts import (
    ClaimReviewTask,
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
from mtm.contracts.commands import MAX_RECORD_PAGE
from mtm.contracts.documentation import ActionPlanDocument
from mtm.contracts.events import ActionPlanDeliveryMethod, OverrideReason, RecommendationOutcome
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
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
TASK_ARGUMENT = click.argument("task", type=TASK, help="The review task's id, as `mtm tasks` lists it.")


def send(subject: str, body: BaseModel) -> CommandReply:
    return asyncio.run(tool.request(nats_client(), subject, body))


def build(model: type[BaseModel], **fields: Any) -> BaseModel:
    """The command from the flags; a mistake is told the way a service would tell it, naming the field."""
    try:
        return model(**fields)
    except ValidationError as exc:
        from mtm.platform.consumer import describe_invalid

        raise UsageError(describe_invalid(exc)) from exc


def _tasks_table(reply: CommandReply) -> None:
    output.table(
        ("Task", "Priority", "Due", "Kind", "Status", "Patient", "Alerts", "Discrepancies", "Owner"),
        (
            (
                t["task_id"],
                t["priority"],
                ((t["due"] or "-")[:16].replace("T", " ") + (" OVERDUE" if t["overdue"] else "")),
                t["reason"],
                t["status"],
                t["patient"],
                t["alerts"],
                t["discrepancies"],
                t["owner"],
            )
            for t in output.rows_of(reply.data)
        ),
        empty="no tasks",
    )
    if reply.message.endswith("(more on the next page)"):
        output.note("more on the next page (--offset)")


@click.command("tasks")
@click.option(
    "--status", type=click.Choice(["requested", "in-progress", "completed"]), help="Only tasks in this state."
)
@click.option("--mine", is_flag=True, help="Only tasks held by the pharmacist logged in.")
@click.option("--owner", type=PRACTITIONER, help="Only tasks held by this pharmacist (practitioner id).")
@click.option("--reason", type=click.Choice(sorted(REASONS)), help="Only this kind of review.")
@click.option("--patient", type=PATIENT, help="Only this patient's tasks (p1 or Patient/p1).")
@click.option("--overdue", is_flag=True, help="Only tasks past their due time.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many tasks.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="At most this many.")
@json_option
def tasks(
    status: str | None,
    mine: bool,
    owner: str | None,
    reason: str | None,
    patient: str | None,
    overdue: bool,
    offset: int,
    limit: int,
    as_json: bool,
) -> int:
    """The review worklist: priority first, then due time."""
    query = build(
        ListReviewTasks,
        status=status,
        mine=mine,
        owner=owner,
        reason=REASONS.get(reason) if reason else None,
        patient_id=patient,
        overdue=True if overdue else None,
        offset=offset,
        limit=limit,
    )
    return output.show_reply(send(LIST_REVIEW_TASKS, query), as_json, _tasks_table)


@click.command("claim")
@TASK_ARGUMENT
@json_option
def claim(task: uuid.UUID, as_json: bool) -> int:
    """Claim a review task as the pharmacist logged in."""
    return output.show_reply(send(CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task)), as_json)


@click.command("release")
@TASK_ARGUMENT
@click.option("--reason", help="Why it goes back to the queue.")
@json_option
def release(task: uuid.UUID, reason: str | None, as_json: bool) -> int:
    """Put a claimed task back in the queue (its owner or an admin)."""
    return output.show_reply(send(RELEASE_REVIEW_TASK, build(ReleaseReviewTask, task_id=task, reason=reason)), as_json)


@click.command("reassign")
@TASK_ARGUMENT
@click.option("--to", "to", required=True, type=PRACTITIONER, help="The pharmacist's practitioner id.")
@json_option
def reassign(task: uuid.UUID, to: str, as_json: bool) -> int:
    """Hand a task to another pharmacist (its owner or an admin)."""
    command = build(ReassignReviewTask, task_id=task, pharmacist_id=to)
    return output.show_reply(send(REASSIGN_REVIEW_TASK, command), as_json)


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise Refused(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def _moment(value: str) -> str:
    """A date (`2027-01-15`, due at the start of that day, UTC) or a date-time with its zone."""
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC).isoformat()
    except ValueError:
        return value


@click.command("complete")
@TASK_ARGUMENT
@click.option("--note", help="The pharmacist's note.")
@click.option("--recommend", multiple=True, help="A recommendation for the patient (repeatable).")
@click.option("--refer", multiple=True, help="A recommendation that needs the prescriber: a referral (repeatable).")
@click.option(
    "--follow-up",
    "follow_ups",
    type=(str, str),
    multiple=True,
    metavar="WHEN REASON",
    help="A follow-up review, e.g. 2027-01-15 'BP recheck' (repeatable).",
)
@click.option(
    "--record",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON: documentation, recommendations, follow_ups, note (see docs/examples/cmr-record.json).",
)
@json_option
def complete(
    task: uuid.UUID,
    note: str | None,
    recommend: tuple[str, ...],
    refer: tuple[str, ...],
    follow_ups: tuple[tuple[str, str], ...],
    record: Path | None,
    as_json: bool,
) -> int:
    """Complete a claimed review task, documenting it (flags, or a whole documented review with --record)."""
    body: Any = _json_file(record) if record else {}
    if not isinstance(body, dict):
        raise Refused(f"{record}: expected a JSON object")
    recommendations = list(body.get("recommendations", []))
    for texts, needs_prescriber in ((recommend, False), (refer, True)):
        recommendations += [
            {"recommendation_id": str(uuid.uuid4()), "text": text, "needs_prescriber": needs_prescriber}
            for text in texts
        ]
    follow_up_list = list(body.get("follow_ups", []))
    follow_up_list += [{"due": _moment(when), "reason": reason} for when, reason in follow_ups]
    try:
        for rec in recommendations:
            rec.setdefault("recommendation_id", str(uuid.uuid4()))
        command = build(
            CompleteReviewTask,
            task_id=task,
            note=note or body.get("note"),
            recommendations=tuple(Recommendation.model_validate(r) for r in recommendations),
            documentation=body.get("documentation"),
            follow_ups=tuple(FollowUpRequest.model_validate(f) for f in follow_up_list),
        )
    except (ValidationError, AttributeError, TypeError) as exc:
        from mtm.platform.consumer import describe_invalid

        raise Refused(f"{record or 'the review'}: {describe_invalid(exc)}") from exc
    return output.show_reply(send(COMPLETE_REVIEW_TASK, command), as_json)


@click.command("override")
@TASK_ARGUMENT
@click.option(
    "--alert", type=click.IntRange(min=0), required=True, help="The alert's position in the task (0 = first)."
)
@click.option("--reason-code", type=click.Choice(get_args(OverrideReason)), required=True, help="Why, coded.")
@click.option("--reason", required=True, help="Why, in words.")
@json_option
def override(task: uuid.UUID, alert: int, reason_code: str, reason: str, as_json: bool) -> int:
    """Override an alert of a task, with the reason."""
    command = build(OverrideAlert, task_id=task, alert=alert, reason_code=reason_code, reason=reason)
    return output.show_reply(send(OVERRIDE_ALERT, command), as_json)


@click.command("outcome")
@click.argument("recommendation", type=RECOMMENDATION, help="The recommendation's id (`mtm record PATIENT` lists it).")
@click.option("--outcome", type=click.Choice(get_args(RecommendationOutcome)), required=True, help="What became of it.")
@click.option("--note", help="A note on the outcome.")
@json_option
def outcome(recommendation: uuid.UUID, outcome: str, note: str | None, as_json: bool) -> int:
    """Record what became of a recommendation."""
    command = build(RecordRecommendationOutcome, recommendation_id=recommendation, outcome=outcome, note=note)
    return output.show_reply(send(RECORD_RECOMMENDATION_OUTCOME, command), as_json)


@click.command("delivered")
@TASK_ARGUMENT
@click.option("--method", type=click.Choice(get_args(ActionPlanDeliveryMethod)), required=True, help="How it went out.")
@click.option("--on", "on", type=DATE, help="The date it went out (default: today).")
@json_option
def delivered(task: uuid.UUID, method: str, on: date | None, as_json: bool) -> int:
    """Record that a CMR's action plan and medication list reached the member."""
    command = build(RecordActionPlanDelivery, task_id=task, method=method, delivered_on=on or datetime.now(UTC).date())
    return output.show_reply(send(RECORD_ACTION_PLAN_DELIVERY, command), as_json)


@click.command("record")
@click.argument("patient", type=PATIENT, help="The patient id (p1 or Patient/p1).")
@click.option(
    "--limit", type=click.IntRange(1, MAX_RECORD_PAGE), default=20, show_default=True, help="Tasks on this page."
)
@click.option("--before", help="The `next` a previous page printed: the tasks older than that page.")
@json_option
def record(patient: str, limit: int, before: str | None, as_json: bool) -> int:
    """What review holds for a patient, newest tasks first: tasks, recommendations, overrides, follow-ups, schedule.

    A patient with more tasks than --limit has more pages: the page ends with `next`, given back as --before."""
    reply = send(GET_REVIEW_RECORD, build(GetReviewRecord, patient_id=patient, limit=limit, before=before))
    return output.show_reply(reply, as_json, lambda r: output.document(r.data, title=f"Patient/{patient}"))


@click.command("alert-stats")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many rules.")
@click.option("--limit", type=click.IntRange(1, 200), default=100, show_default=True, help="At most this many.")
@json_option
def alert_stats(offset: int, limit: int, as_json: bool) -> int:
    """Per drug-check rule: fired, overridden, acted on, accepted."""
    reply = send(LIST_ALERT_RULE_STATS, ListAlertRuleStats(offset=offset, limit=limit))
    columns = ("rule", "kind", "severity", "fired", "tasks", "overridden", "override_rate", "problems")
    columns += ("recommendations", "accepted", "acceptance_rate")

    def render(r: CommandReply) -> None:
        rows = output.rows_of(r.data)
        output.table(columns, ([row.get(c) for c in columns] for row in rows), empty="no alerts yet")

    return output.show_reply(reply, as_json, render)


def _action_plan(patient: str, task: uuid.UUID | None) -> ActionPlanDocument:
    reply = send(GET_ACTION_PLAN, build(GetActionPlan, patient_id=patient, task_id=task))
    if not reply.ok:
        raise CliError(f"{reply.outcome.replace('_', ' ')}: {reply.message}")
    return ActionPlanDocument.model_validate(reply.data)


def _write(output_path: Path | None, content: bytes, what: str, as_json: bool) -> None:
    if output_path is None or str(output_path) == "-":
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    try:
        output_path.write_bytes(content)
    except OSError as exc:
        raise UsageError(f"{output_path}: cannot write it ({exc.strerror})") from exc
    if as_json:
        output.json_line({"output": str(output_path), "bytes": len(content), "what": what})
    else:
        output.note(f"wrote {output_path} ({len(content)} bytes)")


OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    "output_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="File to write (standard output when absent or -).",
)


@click.command("map")
@click.argument("patient", type=PATIENT, help="The member's patient id (p1 or Patient/p1).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf", "fhir"]),
    default="pdf",
    show_default=True,
    help="What to write.",
)
@OUTPUT_OPTION
@click.option("--task", type=TASK, help="A given CMR task (the latest CMR when absent).")
@click.option("--member-name", help="Printed on the papers, never stored.")
@click.option("--birth-date", type=DATE, help="YYYY-MM-DD, printed on the papers.")
@click.option("--provider-name", help="Who signs the letter.")
@click.option("--contact", help="Phone number and hours the member can call.")
@click.option(
    "--program-name", default="Medication Therapy Management Program", show_default=True, help="The program's name."
)
@json_option
def map_(
    patient: str,
    fmt: str,
    output_path: Path | None,
    task: uuid.UUID | None,
    member_name: str | None,
    birth_date: date | None,
    provider_name: str | None,
    contact: str | None,
    program_name: str,
    as_json: bool,
) -> int:
    """The CMR's Medication Action Plan and Personal Medication List, as PDF, HTML or a FHIR Bundle.

    With --json and -o, a JSON line says what was written."""
    from mtm.documents import Letterhead, render_html, render_pdf

    document = _action_plan(patient, task)
    letterhead = Letterhead(
        member_name=member_name,
        birth_date=birth_date,
        program_name=program_name,
        provider_name=provider_name,
        contact=contact,
    )
    if fmt == "fhir":
        from mtm.fhir.export import action_plan_bundle

        content: bytes = json.dumps(action_plan_bundle(document), indent=2).encode()
    elif fmt == "html":
        content = render_html(document, letterhead).encode()
    else:
        content = render_pdf(document, letterhead)
    _write(output_path, content, f"map-{fmt}", as_json)
    return 0


def _data(reply: CommandReply, what: str) -> Any:
    if reply.ok:
        return reply.data
    if reply.outcome == "not_found":
        return None
    raise CliError(f"{what}: {reply.outcome.replace('_', ' ')}: {reply.message}")


RECORD_SECTIONS = ("tasks", "recommendations", "overrides", "follow_ups", "action_plans")
"""What each page of a review record holds of its own tasks; the rest (member, schedule) is on every page."""


async def _whole_review_record(nc: Any, patient: str, token: str) -> dict[str, Any] | None:
    """Every page of the patient's review record, joined into one (an export wants all of it)."""
    whole: dict[str, Any] | None = None
    before = None
    while True:
        query = GetReviewRecord(patient_id=patient, limit=MAX_RECORD_PAGE, before=before)
        page = _data(await tool.ask(nc, GET_REVIEW_RECORD, query, token), "review")
        if page is None:
            return whole
        if whole is None:
            whole = page
        else:
            for section in RECORD_SECTIONS:
                whole[section] = [*whole[section], *page[section]]
        before = page["next"]
        if before is None:
            whole["next"] = None
            return whole


async def _patient_record(patient: str) -> dict[str, Any]:
    """What each service holds for the patient, asked on one connection."""
    token = tool.require_token()
    async with tool.connected(nats_client()) as nc:
        return {
            "record": await _whole_review_record(nc, patient, token),
            "medication_list": _data(
                await tool.ask(nc, GET_MEDICATION_LIST, GetMedicationList(patient_id=patient), token), "reconciliation"
            ),
            "referrals": _data(
                await tool.ask(nc, LIST_REFERRALS, ListReferrals(patient_id=patient, limit=200), token), "referral"
            ),
            "notifications": _data(
                await tool.ask(nc, LIST_NOTIFICATIONS, ListNotifications(patient_id=patient, limit=200), token),
                "notify",
            ),
            "plan": _data(await tool.ask(nc, GET_ACTION_PLAN, GetActionPlan(patient_id=patient), token), "review"),
        }


@click.group("fhir")
def fhir() -> None:
    """FHIR R4 out of mtm."""


@fhir.command("export")
@click.argument("patient", type=PATIENT, help="The patient id (p1 or Patient/p1).")
@OUTPUT_OPTION
@json_option
def fhir_export(patient: str, output_path: Path | None, as_json: bool) -> int:
    """One FHIR R4 Bundle of everything mtm holds for a patient, checked before it is written.

    The bundle is JSON already; with --json and -o, a JSON line says what was written."""
    from mtm.fhir.errors import BundleError
    from mtm.fhir.export import check_bundle, patient_bundle

    found = asyncio.run(_patient_record(patient))
    bundle = patient_bundle(
        patient,
        review_record=found["record"],
        medication_list=found["medication_list"],
        referrals=found["referrals"] or [],
        notifications=found["notifications"] or [],
        action_plan=ActionPlanDocument.model_validate(found["plan"]) if found["plan"] else None,
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    try:
        check_bundle(bundle)
    except BundleError as exc:
        raise CliError(f"the export is not a valid FHIR bundle: {exc}") from exc
    _write(output_path, (json.dumps(bundle, indent=2) + "\n").encode(), "fhir-bundle", as_json)
    return 0


COMMANDS = (tasks, claim, release, reassign, complete, override, outcome, delivered, record, alert_stats, map_, fhir)
