"""What the pages share: asking the services as the signed-in person, and shaping their replies for templates."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from mtm.contracts import CommandReply
from mtm.contracts.identity import Actor
from mtm.web.accounts import Session
from mtm.web.live import Change, Render, Snapshot, reflected, stream

SEVERITIES = ("high", "moderate", "low")
CMR = "comprehensive-medication-review"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def web_of(request: Request) -> Any:
    return request.app.state.web


async def ask(request: Request, session: Session, subject: str, body: BaseModel) -> CommandReply:
    return await web_of(request).services.ask(session.account.actor, subject, body)


async def ask_once_applied(
    request: Request, session: Session, subject: str, body: BaseModel, change: Change
) -> CommandReply:
    """The reply once it shows `change` (bounded): a command's event reaches the log before the tables."""
    return await web_of(request).services.wait_until(session.account.actor, subject, body, reflected(change))


async def ask_for_one(
    request: Request, session: Session, subject: str, model: type[BaseModel], **key: Any
) -> dict[str, Any] | None:
    """One task or referral by its id as the person may see it; None when the id is no id or the service says no."""
    try:
        query = model(**key)
    except ValidationError:
        return None
    reply = await ask(request, session, subject, query)
    return reply.data if reply.ok and isinstance(reply.data, dict) else None


Holds = Callable[[dict[str, Any]], bool]
# How long an action waits for the service's tables to show it before going back to the page anyway.
SETTLE_S = 5.0


async def settled(request: Request, session: Session, subject: str, query: BaseModel, holds: Holds) -> None:
    """Wait (bounded) until the service's tables show what it just accepted: it records the event first and its
    tables follow, and the page the person goes back to should show what they did."""
    await web_of(request).services.wait_until(
        session.account.actor,
        subject,
        query,
        lambda reply: reply.ok and isinstance(reply.data, dict) and holds(reply.data),
        timeout_s=SETTLE_S,
    )


def live(request: Request, render: Render, snapshot: Snapshot | None = None) -> StreamingResponse:
    """The page's event stream: the view as it is once the stream listens, then what `render` makes of each change."""
    return StreamingResponse(
        stream(web_of(request).feed, render, snapshot), media_type="text/event-stream", headers=SSE_HEADERS
    )


def task_row(task: dict[str, Any]) -> dict[str, Any]:
    """One task (GetReviewTask's data) as a worklist row (ListWorklist's shape)."""
    body = task["task"]
    alerts = body.get("alerts") or []
    return {
        "task_id": task["task_id"],
        "patient": task["patient"],
        "reason": body.get("reason", "post-discharge-review"),
        "status": task["status"],
        "priority": task["priority"],
        "owner": task["owner"],
        "due": body.get("due"),
        "overdue": task["overdue"],
        "alerts": {
            **{level: sum(1 for a in alerts if a["severity"] == level) for level in SEVERITIES},
            "interruptive": sum(1 for a in alerts if a["tier"] == "interruptive"),
        },
        "discrepancies": len(body.get("discrepancies") or []),
        "created_at": task["created_at"],
    }


def patient_id_of(reference: str) -> str:
    return reference.removeprefix("Patient/")


def alerts_by_severity(alerts: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Alerts grouped high → low, interruptive ones first in each group."""
    return [
        (level, sorted((a for a in alerts if a["severity"] == level), key=lambda a: a["tier"] != "interruptive"))
        for level in SEVERITIES
        if any(a["severity"] == level for a in alerts)
    ]


def permissions(task: dict[str, Any], actor: Actor) -> dict[str, bool]:
    """What the person may do on a task's page, so that only that is shown (the services decide again).

    Overriding an alert and completing belong to the pharmacist holding the task; its owner or an admin releases
    or hands it on (an admin also assigns an unclaimed one); outcomes and the action plan's delivery are recorded
    by pharmacists once the review is done."""
    status, owner, role = task["status"], task["owner"], actor.role
    holds = role == "pharmacist" and status == "in-progress" and owner == actor.acting_as
    completed_cmr = status == "completed" and task["task"].get("reason") == CMR
    documented = bool((task.get("completion") or {}).get("documentation"))
    return {
        "claim": role == "pharmacist" and status == "requested",
        "complete": holds,
        "override": holds,
        "release": status == "in-progress" and (holds or role == "admin"),
        "reassign": status != "completed" and (holds or role == "admin"),
        "record_outcome": role == "pharmacist" and status == "completed",
        "deliver": role == "pharmacist" and completed_cmr and documented,
        "action_plan": completed_cmr and documented,
    }


def review_of(task: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """The task's part of the patient's review record (GetReviewRecord): its alerts with their overrides, its
    recommendations with their outcomes, its follow-ups and its action plan; without a record, the task's alerts."""
    task_id = task["task_id"]
    record = record or {}
    mine = next((t for t in record.get("tasks") or () if t["task_id"] == task_id), None)
    alerts = (mine or task)["task"].get("alerts") or []
    overrides = {o["alert"]: o for o in record.get("overrides") or () if o["task_id"] == task_id}
    return {
        "alerts": [{**alert, "index": n, "override": overrides.get(n)} for n, alert in enumerate(alerts)],
        "recommendations": [r for r in record.get("recommendations") or () if r["task_id"] == task_id],
        "follow_ups": [f for f in record.get("follow_ups") or () if f["task_id"] == task_id],
        "action_plan": next((a for a in record.get("action_plans") or () if a["task_id"] == task_id), None),
    }


def last_changes(medication_list: dict[str, Any] | None) -> dict[tuple[str, ...], dict[str, Any]]:
    """Per ingredient set, the provenance entry of the last time the medication changed (or came onto the list)."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for entry in (medication_list or {}).get("entries", []):
        provenance = entry.get("provenance") or []
        changed = [p for p in provenance if p["status"] in ("new", "changed")] or provenance[:1]
        if changed:
            found[tuple(entry["ingredients"])] = changed[-1]
    return found


def side_by_side(task: dict[str, Any], medication_list: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each reconciled item with both lists' entries, its status, where the current entry comes from and when the
    medication last changed on the patient's list."""
    changes = last_changes(medication_list)
    rows = []
    for item in task.get("items") or []:
        current = item.get("discharge") or item.get("home") or {}
        change = changes.get(tuple(item.get("ingredients") or ()))
        rows.append(
            {
                "item": item,
                "home": item.get("home"),
                "discharge": item.get("discharge"),
                "source": "discharge list" if item.get("discharge") else "home list",
                "entry_id": current.get("entry_id"),
                "last_changed": change["recorded_at"] if change else None,
                "last_change_source": change["source"] if change else None,
            }
        )
    order = {"stopped": 0, "changed": 1, "new": 2, "continued": 3}
    return sorted(rows, key=lambda r: order.get(r["item"]["status"], 4))


def now() -> datetime:
    return datetime.now(UTC)
