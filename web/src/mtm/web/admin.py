"""The admin's page: who has an account, with which role, and adding one (the `mtm user add` of the browser)."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mtm.web.accounts import ROLES, AccountError, Session
from mtm.web.security import action, page
from mtm.web.views import web_of


async def _render(request: Request, session: Session, *, error: str | None = None, status: int = 200) -> Response:
    web = web_of(request)
    return web.render(
        request, "admin.html", session, status=status, error=error, accounts=await web.store.accounts(), roles=ROLES
    )


@page("admin")
async def accounts(request: Request, session: Session) -> Response:
    return await _render(request, session)


@action("admin")
async def add_account(request: Request, session: Session, form: FormData) -> Response:
    web = web_of(request)
    try:
        await web.store.add_account(
            str(form.get("user") or "").strip(),
            str(form.get("role") or ""),
            str(form.get("practitioner_id") or "").strip() or None,
            str(form.get("password") or ""),
        )
    except AccountError as exc:
        return await _render(request, session, error=str(exc), status=400)
    return RedirectResponse("/admin?done=account-added", status_code=303)


routes = [
    Route("/admin", accounts),
    Route("/admin/accounts", add_account, methods=["POST"]),
]
