"""The pharmacist's pages: the live worklist, a task (both lists side by side, alerts, claim and complete with the
CMR/TMR documentation, the referrals it led to), and a patient's medication list with its history. Release,
reassignment, overrides, outcomes and the member's action plan are in `reviews`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, get_args

from pydantic import ValidationError
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mtm.contracts import (
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    GetMedicationHistory,
    GetMedicationList,
    GetReferral,
    GetReviewRecord,
    GetReviewTask,
    ListReferrals,
    ListWorklist,
)
from mtm.contracts.commands import WorklistStatus
from mtm.contracts.events import OverrideReason, RecommendationOutcome, TaskPriority
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    GET_MEDICATION_HISTORY,
    GET_MEDICATION_LIST,
    GET_REFERRAL,
    GET_REVIEW_RECORD,
    GET_REVIEW_TASK,
    LIST_REFERRALS,
    LIST_WORKLIST,
)
from mtm.web import forms
from mtm.web.accounts import Account, Session
from mtm.web.forms import FormError, completion_of, medication_rows, one_line
from mtm.web.live import Change, Message
from mtm.web.security import action, page
from mtm.web.views import (
    CMR,
    alerts_by_severity,
    ask,
    ask_for_one,
    ask_once_applied,
    live,
    now,
    patient_id_of,
    permissions,
    review_of,
    settled,
    side_by_side,
    task_row,
    web_of,
)

PAGE_SIZE = 50
PRIORITIES: tuple[str, ...] = get_args(TaskPriority)
STATUSES: tuple[str, ...] = get_args(WorklistStatus)
STATUS_SETS = {
    "open": {"requested", "in-progress"},
    "requested": {"requested"},
    "in-progress": {"in-progress"},
    "completed": {"completed"},
}
# The choices the task page's forms offer, as the contracts list them.
CHOICES = {
    "actions": forms.ACTIONS,
    "priorities": forms.PRIORITIES,
    "delivery_methods": forms.DELIVERY_METHODS,
    "recipients": forms.RECIPIENTS,
    "provider_types": forms.PROVIDER_TYPES,
    "categories": forms.CATEGORIES,
    "severities": forms.SEVERITIES,
    "mitigations": forms.MITIGATIONS,
    "override_reasons": get_args(OverrideReason),
    "outcomes": get_args(RecommendationOutcome),
    "plan_deliveries": forms.PLAN_DELIVERY_METHODS,
}
ROWS = {
    "recommendations": forms.RECOMMENDATION_ROWS,
    "problems": forms.PROBLEM_ROWS,
    "plan": forms.PLAN_ROWS,
    "extra_medications": forms.EXTRA_PML_ROWS,
    "follow_ups": forms.FOLLOW_UP_ROWS,
}
# The HTTP status a service's refusal is shown with.
REFUSAL_STATUS = {"invalid": 400, "unauthorized": 403, "forbidden": 403, "not_found": 404, "conflict": 409}


def worklist_query(params: QueryParams, account: Account) -> ListWorklist:
    """The worklist the page's filters ask for; anything unknown falls back to the default."""
    status = params.get("status", "open")
    priority = params.get("priority") or None
    patient = (params.get("patient") or "").strip().removeprefix("Patient/") or None
    try:
        page_number = max(1, int(params.get("page", "1")))
    except ValueError:
        page_number = 1
    try:
        return ListWorklist(
            status=status if status in STATUSES else "open",  # type: ignore[arg-type]
            priority=priority if priority in PRIORITIES else None,  # type: ignore[arg-type]
            owner=account.actor.acting_as if params.get("mine") else None,
            overdue=bool(params.get("overdue")),
            patient_id=patient,
            offset=(page_number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
    except ValidationError:
        return ListWorklist(limit=PAGE_SIZE)


def shows(query: ListWorklist, row: dict[str, Any]) -> bool:
    """Whether a task belongs on the worklist as filtered."""
    return (
        row["status"] in STATUS_SETS[query.status]
        and (query.priority is None or row["priority"] == query.priority)
        and (query.owner is None or row["owner"] == query.owner)
        and (not query.overdue or row["overdue"])
        and (query.patient_id is None or row["patient"] == f"Patient/{query.patient_id}")
    )


async def _worklist_view(request: Request, session: Session, query: ListWorklist) -> dict[str, Any]:
    reply = await ask(request, session, LIST_WORKLIST, query)
    followup = await ask(request, session, LIST_REFERRALS, ListReferrals(needs_attention=True, limit=100))
    data = reply.data if reply.ok and isinstance(reply.data, dict) else {"total": 0, "overdue": 0, "tasks": []}
    return {
        "tasks": data["tasks"],
        "total": data["total"],
        "overdue": data["overdue"],
        "page": query.offset // PAGE_SIZE + 1,
        "pages": max(1, -(-data["total"] // PAGE_SIZE)),
        "error": None if reply.ok else reply.message,
        "followup": followup.data if followup.ok else [],
    }


@page("pharmacist", "admin")
async def worklist(request: Request, session: Session) -> Response:
    query = worklist_query(request.query_params, session.account)
    return web_of(request).render(
        request,
        "worklist.html",
        session,
        query=query,
        params=request.query_params,
        priorities=PRIORITIES,
        statuses=STATUSES,
        live_url=f"/worklist/events?{request.url.query}",
        **await _worklist_view(request, session, query),
    )


@page("pharmacist", "admin")
async def worklist_events(request: Request, session: Session) -> Response:
    query = worklist_query(request.query_params, session.account)
    web = web_of(request)

    async def render(change: Change) -> AsyncIterator[Message]:
        if change.about_tasks() and change.task_id:
            reply = await ask_once_applied(
                request, session, GET_REVIEW_TASK, GetReviewTask(task_id=change.task_id), change
            )
            if not reply.ok:
                return
            row = task_row(reply.data)  # type: ignore[arg-type]
            if shows(query, row):
                html = web.fragment("_task_row.html", task=row, account=session.account)
                yield "upsert", {"list": "tasks", "id": f"task-{row['task_id']}", "html": html}
            else:
                yield "remove", {"id": f"task-{row['task_id']}"}
        elif change.about_referrals() and change.referral_id:
            get = GetReferral(referral_id=change.referral_id)
            await ask_once_applied(request, session, GET_REFERRAL, get, change)
            found = await ask(request, session, LIST_REFERRALS, ListReferrals(needs_attention=True, limit=100))
            html = web.fragment("_followup.html", followup=found.data if found.ok else [])
            yield "section", {"id": "followup", "html": html}

    async def snapshot() -> AsyncIterator[Message]:
        view = await _worklist_view(request, session, query)
        yield "section", {"id": "tasks", "within": "table", "html": web.fragment("_task_rows.html", **view)}
        yield "section", {"id": "counts", "html": web.fragment("_worklist_counts.html", **view)}
        yield "section", {"id": "followup", "html": web.fragment("_followup.html", **view)}

    return live(request, render, snapshot)


async def _task_view(request: Request, session: Session, task_id: str, *, full: bool = True) -> dict[str, Any] | None:
    """What the task page shows; `full=False`: only what its live sections need (status, referrals)."""
    task = await ask_for_one(request, session, GET_REVIEW_TASK, GetReviewTask, task_id=task_id)
    if task is None:
        return None
    patient_id = patient_id_of(task["patient"])
    referrals = await ask(request, session, LIST_REFERRALS, ListReferrals(task_id=task["task_id"], limit=100))
    body = task["task"]
    view = {"task": task, "body": body, "patient_id": patient_id, "referrals": referrals.data if referrals.ok else []}
    if not full:
        return view
    medication_list = await ask(request, session, GET_MEDICATION_LIST, GetMedicationList(patient_id=patient_id))
    # Overrides, outcomes, follow-ups and the action plan's delivery are in the patient's review record (this task's
    # part of it, however long the patient's history).
    query = GetReviewRecord(patient_id=patient_id, task_id=task["task_id"])
    record = await ask(request, session, GET_REVIEW_RECORD, query)
    review = review_of(task, record.data if record.ok and isinstance(record.data, dict) else None)
    may = permissions(task, session.account.actor)
    pharmacists = []
    if may["reassign"]:
        pharmacists = [
            a.actor.acting_as
            for a in await web_of(request).store.accounts()
            if a.role == "pharmacist" and not a.disabled and a.actor.acting_as != task["owner"]
        ]
    return {
        **view,
        **review,
        "may": may,
        "pharmacists": pharmacists,
        "rows": side_by_side(body, medication_list.data if medication_list.ok else None),
        "alert_groups": alerts_by_severity(review["alerts"]),
        "medication_rows": medication_rows(body.get("items") or []),
        "choices": CHOICES,
        "rows_of": ROWS,
        "today": now().date().isoformat(),
    }


async def render_task(
    request: Request,
    session: Session,
    task_id: str,
    *,
    error: str | None = None,
    status: int = 200,
    filled: FormData | None = None,
) -> Response:
    """The task page; after a refused form, with the one-line reason and what was typed into the form."""
    web = web_of(request)
    view = await _task_view(request, session, task_id)
    if view is None:
        return web.not_found(request, session, "There is no such review task.")
    mine = session.account.actor.acting_as
    return web.render(
        request,
        "task.html",
        session,
        status=status,
        error=error,
        mine=mine,
        filled=filled or {},
        live_url=f"/tasks/{task_id}/events",
        **view,
    )


async def refused(
    request: Request, session: Session, task_id: str, reply: CommandReply, filled: FormData | None = None
) -> Response:
    """A service's refusal shown on the task page in one line, with the HTTP status its outcome stands for."""
    message = " ".join(reply.message.split()) or reply.outcome.replace("_", " ")
    status = REFUSAL_STATUS.get(reply.outcome, 409)
    return await render_task(request, session, task_id, error=message, status=status, filled=filled)


@page("pharmacist", "admin")
async def task_page(request: Request, session: Session) -> Response:
    return await render_task(request, session, request.path_params["task_id"])


@page("pharmacist", "admin")
async def task_events(request: Request, session: Session) -> Response:
    web = web_of(request)
    task_id = request.path_params["task_id"]
    view = await _task_view(request, session, task_id, full=False)
    if view is None:
        return web.not_found(request, session, "There is no such review task.")
    patient = view["patient_id"]

    async def render(change: Change) -> AsyncIterator[Message]:
        if change.about_tasks() and change.task_id == task_id:
            reply = await ask_once_applied(request, session, GET_REVIEW_TASK, GetReviewTask(task_id=task_id), change)
            if reply.ok:
                html = web.fragment("_task_status.html", task=reply.data, mine=session.account.actor.acting_as)
                yield "section", {"id": "task-status", "html": html}
        elif change.about_referrals() and change.referral_id and change.event.patient_id == patient:
            await ask_once_applied(request, session, GET_REFERRAL, GetReferral(referral_id=change.referral_id), change)
            found = await ask(request, session, LIST_REFERRALS, ListReferrals(task_id=task_id, limit=100))
            if found.ok:
                yield "section", {"id": "referrals", "html": web.fragment("_task_referrals.html", referrals=found.data)}

    async def snapshot() -> AsyncIterator[Message]:
        now = await _task_view(request, session, task_id, full=False)
        if now is not None:
            mine = session.account.actor.acting_as
            yield (
                "section",
                {"id": "task-status", "html": web.fragment("_task_status.html", task=now["task"], mine=mine)},
            )
            yield "section", {"id": "referrals", "html": web.fragment("_task_referrals.html", **now)}

    return live(request, render, snapshot)


@action("pharmacist")
async def claim(request: Request, session: Session, form: FormData) -> Response:
    task_id = request.path_params["task_id"]
    try:
        command = ClaimReviewTask(task_id=task_id)
    except ValidationError:
        return web_of(request).not_found(request, session, "There is no such review task.")
    reply = await ask(request, session, CLAIM_REVIEW_TASK, command)
    if not reply.ok:
        return await refused(request, session, task_id, reply)
    return RedirectResponse(f"/tasks/{task_id}?done=claimed", status_code=303)


def _completed(task: dict[str, Any]) -> bool:
    return task["status"] == "completed" and task.get("completion") is not None


@action("pharmacist")
async def complete(request: Request, session: Session, form: FormData) -> Response:
    task_id = request.path_params["task_id"]
    task = await ask_for_one(request, session, GET_REVIEW_TASK, GetReviewTask, task_id=task_id)
    if task is None:
        return web_of(request).not_found(request, session, "There is no such review task.")
    # A CMR is always documented; another review when the pharmacist ticks it (a TMR of an enrolled member).
    documented = task["task"].get("reason") == CMR or form.get("doc") == "on"
    try:
        command = CompleteReviewTask(task_id=task_id, **completion_of(form, documented=documented))
    except FormError as exc:
        return await render_task(request, session, task_id, error=str(exc), status=400, filled=form)
    except ValidationError as exc:
        return await render_task(request, session, task_id, error=one_line(exc), status=400, filled=form)
    reply = await ask(request, session, COMPLETE_REVIEW_TASK, command)
    if not reply.ok:
        return await refused(request, session, task_id, reply, filled=form)
    # Back on the page, the review shows as done, with its papers when it is a CMR.
    await settled(request, session, GET_REVIEW_TASK, GetReviewTask(task_id=task_id), _completed)
    return RedirectResponse(f"/tasks/{task_id}?done=completed", status_code=303)


@page("pharmacist", "admin")
async def patient_page(request: Request, session: Session) -> Response:
    web = web_of(request)
    patient_id = request.path_params["patient_id"]
    try:
        medication_list = await ask(request, session, GET_MEDICATION_LIST, GetMedicationList(patient_id=patient_id))
        history = await ask(request, session, GET_MEDICATION_HISTORY, GetMedicationHistory(patient_id=patient_id))
    except ValidationError:
        return web.not_found(request, session, "There is no such patient.")
    if not medication_list.ok and not history.ok:
        return web.not_found(request, session, "mtm holds no medication list for this patient.")
    open_tasks = await ask(request, session, LIST_WORKLIST, ListWorklist(status="open", patient_id=patient_id))
    tasks = open_tasks.data["tasks"] if open_tasks.ok else []  # type: ignore[index]
    return web.render(
        request,
        "patient.html",
        session,
        patient_id=patient_id,
        medication_list=medication_list.data if medication_list.ok else None,
        history=history.data if history.ok else [],
        tasks=tasks,
    )


routes = [
    Route("/worklist", worklist),
    Route("/worklist/events", worklist_events),
    Route("/tasks/{task_id}", task_page),
    Route("/tasks/{task_id}/events", task_events),
    Route("/tasks/{task_id}/claim", claim, methods=["POST"]),
    Route("/tasks/{task_id}/complete", complete, methods=["POST"]),
    Route("/patients/{patient_id}", patient_page),
]
