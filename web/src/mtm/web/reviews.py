"""A review task beyond claim and complete: release and reassign, override an alert, record a recommendation's outcome
and the delivery of a CMR's papers, and the member's Medication Action Plan and Personal Medication List (HTML
preview in the page, PDF download)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mtm.contracts import (
    GetActionPlan,
    GetReviewRecord,
    GetReviewTask,
    OverrideAlert,
    ReassignReviewTask,
    RecordActionPlanDelivery,
    RecordRecommendationOutcome,
    ReleaseReviewTask,
)
from mtm.contracts.documentation import ActionPlanDocument
from mtm.contracts.subjects import (
    GET_ACTION_PLAN,
    GET_REVIEW_RECORD,
    GET_REVIEW_TASK,
    OVERRIDE_ALERT,
    REASSIGN_REVIEW_TASK,
    RECORD_ACTION_PLAN_DELIVERY,
    RECORD_RECOMMENDATION_OUTCOME,
    RELEASE_REVIEW_TASK,
)
from mtm.documents import render_html, render_pdf
from mtm.web.accounts import Session
from mtm.web.forms import one_line
from mtm.web.pharmacist import refused, render_task
from mtm.web.security import action, page
from mtm.web.views import Holds, ask, ask_for_one, patient_id_of, settled, web_of

# The papers are a document of their own, framed by the task page: their inline print styles are allowed, and
# only this site may frame them; nothing else (no scripts, no forms, no other resources).
DOCUMENT_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'; "
    "form-action 'none'",
    "x-frame-options": "SAMEORIGIN",
}


def _field(form: FormData, name: str) -> str:
    return " ".join(str(form.get(name) or "").split())


async def _send(
    request: Request,
    session: Session,
    subject: str,
    build: type[BaseModel],
    done: str,
    shows: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    **fields: Any,
) -> Response:
    """Build the command from the form's fields and send it; go back to the task with a notice once `shows` (the
    task whole) has seen it applied, or show why not in one line."""
    task_id = request.path_params["task_id"]
    task = await ask_for_one(request, session, GET_REVIEW_TASK, GetReviewTask, task_id=task_id)
    if task is None:
        return web_of(request).not_found(request, session, "There is no such review task.")
    try:
        command = build(**fields)
    except ValidationError as exc:
        return await render_task(request, session, task_id, error=one_line(exc), status=400)
    reply = await ask(request, session, subject, command)
    if not reply.ok:
        return await refused(request, session, task_id, reply)
    if shows is not None:
        await shows(task)
    return RedirectResponse(f"/tasks/{task_id}?done={done}", status_code=303)


def _task_settles(request: Request, session: Session, holds: Holds) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def wait(task: dict[str, Any]) -> None:
        await settled(request, session, GET_REVIEW_TASK, GetReviewTask(task_id=task["task_id"]), holds)

    return wait


def _record_settles(request: Request, session: Session, holds: Holds) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def wait(task: dict[str, Any]) -> None:
        query = GetReviewRecord(patient_id=patient_id_of(task["patient"]), task_id=task["task_id"])
        await settled(request, session, GET_REVIEW_RECORD, query, holds)

    return wait


@action("pharmacist", "admin")
async def release(request: Request, session: Session, form: FormData) -> Response:
    task_id = request.path_params["task_id"]
    return await _send(
        request,
        session,
        RELEASE_REVIEW_TASK,
        ReleaseReviewTask,
        "released",
        _task_settles(request, session, lambda task: task["status"] != "in-progress"),
        task_id=task_id,
        reason=_field(form, "reason") or None,
    )


@action("pharmacist", "admin")
async def reassign(request: Request, session: Session, form: FormData) -> Response:
    to = _field(form, "pharmacist_id")
    return await _send(
        request,
        session,
        REASSIGN_REVIEW_TASK,
        ReassignReviewTask,
        "reassigned",
        _task_settles(request, session, lambda task: task["owner"] == to or task["status"] == "completed"),
        task_id=request.path_params["task_id"],
        pharmacist_id=to,
    )


@action("pharmacist")
async def override(request: Request, session: Session, form: FormData) -> Response:
    task_id, alert = request.path_params["task_id"], request.path_params["alert"]

    def overridden(record: dict[str, Any]) -> bool:
        return any(o["task_id"] == task_id and o["alert"] == alert for o in record.get("overrides") or ())

    return await _send(
        request,
        session,
        OVERRIDE_ALERT,
        OverrideAlert,
        "overridden",
        _record_settles(request, session, overridden),
        task_id=task_id,
        alert=alert,
        reason_code=str(form.get("reason_code") or ""),
        reason=str(form.get("reason") or "").strip(),
    )


@action("pharmacist")
async def record_outcome(request: Request, session: Session, form: FormData) -> Response:
    recommendation_id = request.path_params["recommendation_id"]
    outcome = str(form.get("outcome") or "")

    def recorded(record: dict[str, Any]) -> bool:
        return any(
            r["recommendation_id"] == recommendation_id and r["outcome"] == outcome
            for r in record.get("recommendations") or ()
        )

    return await _send(
        request,
        session,
        RECORD_RECOMMENDATION_OUTCOME,
        RecordRecommendationOutcome,
        "outcome-recorded",
        _record_settles(request, session, recorded),
        recommendation_id=recommendation_id,
        outcome=outcome,
        note=str(form.get("note") or "").strip() or None,
    )


@action("pharmacist")
async def record_delivery(request: Request, session: Session, form: FormData) -> Response:
    task_id = request.path_params["task_id"]
    try:
        delivered_on = date.fromisoformat(str(form.get("delivered_on") or ""))
    except ValueError:
        return await render_task(
            request, session, task_id, error="delivered_on: give the date (YYYY-MM-DD)", status=400
        )

    def delivered(record: dict[str, Any]) -> bool:
        return any(a["task_id"] == task_id and a["delivered_on"] for a in record.get("action_plans") or ())

    return await _send(
        request,
        session,
        RECORD_ACTION_PLAN_DELIVERY,
        RecordActionPlanDelivery,
        "delivered",
        _record_settles(request, session, delivered),
        task_id=task_id,
        method=str(form.get("method") or ""),
        delivered_on=delivered_on,
    )


async def _action_plan(request: Request, session: Session) -> ActionPlanDocument | Response:
    """The CMR's papers as review gives them, or the page saying why there are none."""
    web = web_of(request)
    task_id = request.path_params["task_id"]
    task = await ask_for_one(request, session, GET_REVIEW_TASK, GetReviewTask, task_id=task_id)
    if task is None:
        return web.not_found(request, session, "There is no such review task.")
    query = GetActionPlan(patient_id=patient_id_of(task["patient"]), task_id=task["task_id"])
    reply = await ask(request, session, GET_ACTION_PLAN, query)
    if not reply.ok:
        return web.not_found(request, session, "This task has no action plan: only a completed CMR has one.")
    return ActionPlanDocument.model_validate(reply.data)


@page("pharmacist", "admin")
async def action_plan_html(request: Request, session: Session) -> Response:
    # The member's name and the pharmacy's contact are never stored: the papers leave blank lines to fill in.
    found = await _action_plan(request, session)
    if isinstance(found, Response):
        return found
    return HTMLResponse(render_html(found), headers=DOCUMENT_HEADERS)


@page("pharmacist", "admin")
async def action_plan_pdf(request: Request, session: Session) -> Response:
    found = await _action_plan(request, session)
    if isinstance(found, Response):
        return found
    # ReportLab is pure Python and takes a while on a long list: off the event loop, other pages keep answering.
    pdf = await asyncio.to_thread(render_pdf, found)
    filename = f"action-plan-{found.task_id}.pdf"
    return Response(
        pdf, media_type="application/pdf", headers={"content-disposition": f'attachment; filename="{filename}"'}
    )


routes = [
    Route("/tasks/{task_id}/release", release, methods=["POST"]),
    Route("/tasks/{task_id}/reassign", reassign, methods=["POST"]),
    Route("/tasks/{task_id}/alerts/{alert:int}/override", override, methods=["POST"]),
    Route("/tasks/{task_id}/recommendations/{recommendation_id}/outcome", record_outcome, methods=["POST"]),
    Route("/tasks/{task_id}/action-plan/delivery", record_delivery, methods=["POST"]),
    Route("/tasks/{task_id}/action-plan", action_plan_html),
    Route("/tasks/{task_id}/action-plan.pdf", action_plan_pdf),
]
