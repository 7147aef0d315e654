"""Signing in and out: password, hospital single sign-on, and tokens for the `mtm` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mtm.platform.logging import get_logger
from mtm.web.accounts import Account
from mtm.web.oidc import SsoRefused
from mtm.web.security import client_address, current_session, safe_next

log = get_logger(__name__)


def _web(request: Request) -> Any:
    return request.app.state.web


async def home(request: Request) -> Response:
    session = await current_session(request)
    return RedirectResponse(session.account.home if session else "/login", status_code=303)


def _login_page(request: Request, *, error: str | None = None, status: int = 200, user: str = "") -> Response:
    web = _web(request)
    token = web.cookies.login_csrf(request)
    response = web.render(
        request,
        "login.html",
        status=status,
        login_csrf=token,
        error=error,
        user=user,
        next=safe_next(request.query_params.get("next"), ""),
        sso=web.sso,
    )
    web.cookies.keep_login_csrf(response, token)
    return response


async def login(request: Request) -> Response:
    web = _web(request)
    if request.method == "GET":
        return _login_page(request)
    form = await request.form()
    if not web.cookies.login_csrf_ok(request, form.get("csrf_token")):
        return web.forbidden(request, None, "The sign-in form was missing its security token; reload it and retry.")
    user = str(form.get("user") or "").strip()
    password = str(form.get("password") or "")
    account, refusal, status = await _check_password(request, user, password)
    if account is None:
        return _login_page(request, error=refusal, status=status, user=user)
    return await _signed_in(request, account, via="password", next_url=str(form.get("next") or ""))


async def _check_password(request: Request, user: str, password: str) -> tuple[Account | None, str, int]:
    """The account, or why not and the status to answer with; failures count towards the throttle."""
    web = _web(request)
    address = client_address(request)
    wait = await web.throttle.retry_after_s(user, address)
    if wait is not None:
        log.warning("sign-in refused", outcome="throttled", reason_code="too-many-failures")
        return None, f"Too many failed sign-ins. Try again in {max(1, wait // 60)} min.", 429
    account = await web.store.authenticate(user, password) if user and password else None
    if account is None:
        await web.throttle.failed(user, address)
        log.warning("sign-in refused", outcome="refused", reason_code="wrong-credentials")
        return None, "Wrong user name or password.", 401
    await web.throttle.succeeded(user, address)
    return account, "", 200


async def _signed_in(request: Request, account: Account, *, via: str, next_url: str) -> Response:
    web = _web(request)
    session = await web.store.start_session(account, via=via, ttl=web.settings.session_ttl)
    log.info("signed in", outcome="accepted", reason_code=f"{account.role}:{via}")
    response = RedirectResponse(safe_next(next_url, account.home), status_code=303)
    web.cookies.set_session(response, session.session_id)
    return response


async def logout(request: Request) -> Response:
    web = _web(request)
    session = await current_session(request)
    response = RedirectResponse("/login", status_code=303)
    if session is not None:
        form = await request.form()
        from mtm.web.security import csrf_ok

        if not csrf_ok(session, form):
            return web.forbidden(request, session, "The form was missing its security token.")
        await web.store.end_session(session.session_id)
    web.cookies.clear_session(response)
    return response


async def sso_start(request: Request) -> Response:
    web = _web(request)
    if web.sso is None:
        return web.not_found(request, None, "Single sign-on is not set up here.")
    return await web.sso.start(request)


async def sso_callback(request: Request) -> Response:
    web = _web(request)
    if web.sso is None:
        return web.not_found(request, None, "Single sign-on is not set up here.")
    try:
        username = await web.sso.finish(request)
    except SsoRefused as exc:
        return _login_page(request, error=str(exc), status=401)
    account = await web.store.account(username)
    if account is None or account.disabled:
        log.warning("sign-in refused", outcome="refused", reason_code="sso-no-account")
        return _login_page(request, error="Single sign-on worked, but there is no mtm account for you.", status=403)
    return await _signed_in(request, account, via="oidc", next_url="")


async def api_login(request: Request) -> Response:
    """`mtm login`: a JSON body `{"user", "password"}` → a signed actor token for the command line."""
    web = _web(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "send JSON (Content-Type: application/json)"}, status_code=415)
    try:
        body = json.loads(await request.body())
        user, password = str(body["user"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": 'expected {"user": …, "password": …}'}, status_code=400)
    account, refusal, status = await _check_password(request, user, password)
    if account is None:
        return JSONResponse({"error": refusal}, status_code=status)
    ttl = timedelta(seconds=web.settings.web_cli_token_ttl_s)
    token = web.issuer.issue(account.actor, ttl=ttl)
    return JSONResponse(
        {
            "token": token,
            "expires_at": (datetime.now(UTC) + ttl).isoformat(),
            "user_id": account.user_id,
            "role": account.role,
            "practitioner_id": account.practitioner_id,
        }
    )


routes = [
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/auth/sso", sso_start),
    Route("/auth/sso/callback", sso_callback),
    Route("/api/login", api_login, methods=["POST"]),
]
