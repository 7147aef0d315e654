"""The physician's pages: the referral inbox (unread first, overdue marked) and a referral with the pharmacist's
recommendation, the alerts behind it and the medication list; acknowledge it, answer it. A physician sees only
the referrals addressed to them: the referral service answers `not_found` for the others, and so does this app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mtm.contracts import (
    AcknowledgeReferral,
    AnswerReferral,
    GetMedicationList,
    GetReferral,
    GetReviewTask,
    ListReferrals,
)
from mtm.contracts.events import ReferralDecision
from mtm.contracts.subjects import (
    ACKNOWLEDGE_REFERRAL,
    ANSWER_REFERRAL,
    GET_MEDICATION_LIST,
    GET_REFERRAL,
    GET_REVIEW_TASK,
    LIST_REFERRALS,
)
from mtm.web.accounts import Session
from mtm.web.live import Change, Message
from mtm.web.security import action, page
from mtm.web.views import alerts_by_severity, ask, ask_for_one, ask_once_applied, live, patient_id_of, web_of

DECISIONS: tuple[str, ...] = get_args(ReferralDecision)
INBOX_SIZE = 200


async def _inbox_view(request: Request, session: Session) -> dict[str, Any]:
    reply = await ask(request, session, LIST_REFERRALS, ListReferrals(limit=INBOX_SIZE))
    referrals = reply.data if reply.ok else []
    return {
        "referrals": referrals,
        "unread": sum(1 for r in referrals if not r["acknowledged_at"] and r["status"] == "requested"),
        "error": None if reply.ok else reply.message,
    }


@page("physician")
async def inbox(request: Request, session: Session) -> Response:
    view = await _inbox_view(request, session)
    return web_of(request).render(request, "referrals.html", session, live_url="/referrals/events", **view)


def _mine(change: Change, session: Session) -> bool:
    return change.about_referrals() and change.physician_id == session.account.actor.acting_as


@page("physician")
async def inbox_events(request: Request, session: Session) -> Response:
    web = web_of(request)

    async def render(change: Change) -> AsyncIterator[Message]:
        if not _mine(change, session) or change.event.EVENT_NAME == "notification_failed" or not change.referral_id:
            return
        reply = await ask_once_applied(
            request, session, GET_REFERRAL, GetReferral(referral_id=change.referral_id), change
        )
        if reply.ok:
            html = web.fragment("_referral_row.html", referral=reply.data)
            yield "upsert", {"list": "referrals", "id": f"referral-{change.referral_id}", "html": html}

    async def snapshot() -> AsyncIterator[Message]:
        view = await _inbox_view(request, session)
        yield "section", {"id": "referrals", "within": "table", "html": web.fragment("_referral_rows.html", **view)}

    return live(request, render, snapshot)


async def _referral_view(request: Request, session: Session, referral_id: str) -> dict[str, Any] | None:
    referral = await ask_for_one(request, session, GET_REFERRAL, GetReferral, referral_id=referral_id)
    if referral is None:
        return None
    patient_id = patient_id_of(referral["patient"])
    task = await ask(request, session, GET_REVIEW_TASK, GetReviewTask(task_id=referral["task_id"]))
    medication_list = await ask(request, session, GET_MEDICATION_LIST, GetMedicationList(patient_id=patient_id))
    alerts = (task.data or {}).get("task", {}).get("alerts", []) if task.ok else []  # type: ignore[union-attr]
    concerned = set(referral["referral"]["recommendation"].get("ingredients") or [])
    behind = [a for a in alerts if concerned & set(a["ingredients"])]
    return {
        "referral": referral,
        "recommendation": referral["referral"]["recommendation"],
        "patient_id": patient_id,
        "alerts_behind": alerts_by_severity(behind),
        "other_alerts": alerts_by_severity([a for a in alerts if a not in behind]),
        "medication_list": medication_list.data if medication_list.ok else None,
        "decisions": DECISIONS,
    }


async def _render_referral(
    request: Request, session: Session, referral_id: str, *, error: str | None = None, status: int = 200
) -> Response:
    web = web_of(request)
    view = await _referral_view(request, session, referral_id)
    if view is None:
        return web.not_found(request, session, "There is no such referral for you.")
    return web.render(
        request,
        "referral.html",
        session,
        status=status,
        error=error,
        live_url=f"/referrals/{referral_id}/events",
        **view,
    )


@page("physician")
async def referral_page(request: Request, session: Session) -> Response:
    return await _render_referral(request, session, request.path_params["referral_id"])


@page("physician")
async def referral_events(request: Request, session: Session) -> Response:
    web = web_of(request)
    referral_id = request.path_params["referral_id"]
    if await _referral_view(request, session, referral_id) is None:
        return web.not_found(request, session, "There is no such referral for you.")

    async def render(change: Change) -> AsyncIterator[Message]:
        if change.referral_id != referral_id or not _mine(change, session):
            return
        reply = await ask_once_applied(request, session, GET_REFERRAL, GetReferral(referral_id=referral_id), change)
        if reply.ok:
            yield (
                "section",
                {"id": "referral-status", "html": web.fragment("_referral_status.html", referral=reply.data)},
            )

    return live(request, render)


async def _send(request: Request, session: Session, subject: str, command: BaseModel | None, done: str) -> Response:
    """A command about the referral in the path: absent, or not this physician's, is 404; refused, the page again."""
    referral_id = request.path_params["referral_id"]
    reply = await ask(request, session, subject, command) if command is not None else None
    if reply is None or reply.outcome == "not_found":
        return web_of(request).not_found(request, session, "There is no such referral for you.")
    if not reply.ok:
        return await _render_referral(request, session, referral_id, error=reply.message, status=409)
    return RedirectResponse(f"/referrals/{referral_id}?done={done}", status_code=303)


def _command(model: type[BaseModel], **fields: Any) -> BaseModel | None:
    try:
        return model(**fields)
    except ValidationError:
        return None


@action("physician")
async def acknowledge(request: Request, session: Session, form: FormData) -> Response:
    command = _command(AcknowledgeReferral, referral_id=request.path_params["referral_id"])
    return await _send(request, session, ACKNOWLEDGE_REFERRAL, command, "acknowledged")


@action("physician")
async def answer(request: Request, session: Session, form: FormData) -> Response:
    referral_id = request.path_params["referral_id"]
    decision = str(form.get("decision") or "")
    note = str(form.get("note") or "").strip() or None
    if decision not in DECISIONS:
        return await _render_referral(
            request, session, referral_id, error="Choose accept, decline or modify.", status=400
        )
    if decision == "modified" and not note:
        return await _render_referral(
            request, session, referral_id, error="Say in the note how you modify it.", status=400
        )
    command = _command(AnswerReferral, referral_id=referral_id, decision=decision, note=note)
    return await _send(request, session, ANSWER_REFERRAL, command, "answered")


routes = [
    Route("/referrals", inbox),
    Route("/referrals/events", inbox_events),
    Route("/referrals/{referral_id}", referral_page),
    Route("/referrals/{referral_id}/events", referral_events),
    Route("/referrals/{referral_id}/acknowledge", acknowledge, methods=["POST"]),
    Route("/referrals/{referral_id}/answer", answer, methods=["POST"]),
]
