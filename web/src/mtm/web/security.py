"""Signed cookies, CSRF tokens, sign-in throttling, and the guards every page and form goes through.

* The session cookie carries a random session id signed with itsdangerous (HttpOnly, SameSite=Lax, Secure on
  https); the session itself (account, expiry, CSRF token) is in the database, so signing out ends it.
* Every form carries the session's CSRF token (`csrf_token`); the sign-in form, before there is a session, a
  token bound to a signed cookie of its own (double submit). A POST without the right one is refused with 403.
* Failed sign-ins are counted per account and per client address within a window; past the limit, 429.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import quote

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mtm.contracts.identity import Role
from mtm.web.accounts import Session, Store

SESSION_COOKIE = "mtm_session"
LOGIN_CSRF_COOKIE = "mtm_login_csrf"
CSRF_FIELD = "csrf_token"
LOGIN_CSRF_TTL_S = 3600


class Cookies:
    def __init__(self, secret: str, *, secure: bool, session_ttl: timedelta) -> None:
        self._session = URLSafeTimedSerializer(secret, salt="mtm-session")
        self._login_csrf = URLSafeTimedSerializer(secret, salt="mtm-login-csrf")
        self.secure = secure
        self._session_ttl = session_ttl

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=self.secure)

    def set_session(self, response: Response, session_id: str) -> None:
        self._set(response, SESSION_COOKIE, self._session.dumps(session_id), int(self._session_ttl.total_seconds()))

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure)

    def session_id(self, request: Request) -> str | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            value = self._session.loads(raw, max_age=int(self._session_ttl.total_seconds()))
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def login_csrf(self, request: Request) -> str:
        """The sign-in form's token: the one the browser's cookie holds, else a new one (set with `keep`)."""
        raw = request.cookies.get(LOGIN_CSRF_COOKIE)
        if raw:
            try:
                value = self._login_csrf.loads(raw, max_age=LOGIN_CSRF_TTL_S)
                if isinstance(value, str):
                    return value
            except BadSignature:
                pass
        return secrets.token_urlsafe(32)

    def keep_login_csrf(self, response: Response, token: str) -> None:
        self._set(response, LOGIN_CSRF_COOKIE, self._login_csrf.dumps(token), LOGIN_CSRF_TTL_S)

    def login_csrf_ok(self, request: Request, submitted: str | None) -> bool:
        raw = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not raw or not submitted:
            return False
        try:
            expected = self._login_csrf.loads(raw, max_age=LOGIN_CSRF_TTL_S)
        except BadSignature:
            return False
        return isinstance(expected, str) and hmac.compare_digest(expected, submitted)


class LoginThrottle:
    """At most `per_account` failed sign-ins per account and `per_address` per client address within `window`."""

    def __init__(self, store: Store, *, per_account: int, per_address: int, window: timedelta) -> None:
        self._store = store
        self._limits = {"user": per_account, "ip": per_address}
        self.window = window

    @staticmethod
    def keys(user_id: str, address: str) -> list[str]:
        return ["user:" + hashlib.sha256(user_id.strip().lower().encode()).hexdigest(), f"ip:{address}"]

    async def retry_after_s(self, user_id: str, address: str) -> int | None:
        """Seconds until another try is allowed, or None when it is allowed now."""
        found = await self._store.failures(self.keys(user_id, address), self.window)
        waits = [
            (first + self.window - datetime.now(UTC)).total_seconds()
            for key, (count, first) in found.items()
            if count >= self._limits[key.split(":", 1)[0]]
        ]
        return max(1, int(max(waits)) + 1) if waits else None

    async def failed(self, user_id: str, address: str) -> None:
        await self._store.record_failure(self.keys(user_id, address), self.window)

    async def succeeded(self, user_id: str, address: str) -> None:
        await self._store.clear_failures(self.keys(user_id, address)[0])


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def safe_next(value: str | None, default: str) -> str:
    """Only a path on this site: never another host (`//evil`, `https://…`), so a link cannot send people away."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


Endpoint = Callable[..., Awaitable[Response]]


async def current_session(request: Request) -> Session | None:
    web = request.app.state.web
    session_id = web.cookies.session_id(request)
    return await web.store.session(session_id) if session_id else None


def _guard(roles: tuple[Role, ...], *, form: bool) -> Callable[[Endpoint], Endpoint]:
    def wrap(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def guarded(request: Request) -> Response:
            web = request.app.state.web
            session = await current_session(request)
            if session is None:
                return login_redirect(request)
            extra: tuple[Any, ...] = ()
            if form:
                data = await request.form()
                if not csrf_ok(session, data):
                    return web.forbidden(request, session, "The form was missing its security token.")
                extra = (data,)
            if session.account.role not in roles:
                return web.forbidden(request, session, "Your role may not do this.")
            return await endpoint(request, session, *extra)

        return guarded

    return wrap


def page(*roles: Role) -> Callable[[Endpoint], Endpoint]:
    """A page for signed-in people with one of `roles`: the others are sent to sign in, or refused (403)."""
    return _guard(roles, form=False)


def action(*roles: Role) -> Callable[[Endpoint], Endpoint]:
    """A form's target: signed in (else to sign in), the session's CSRF token (else 403), one of `roles` (else 403)."""
    return _guard(roles, form=True)


def csrf_ok(session: Session, form: FormData) -> bool:
    submitted = form.get(CSRF_FIELD)
    return isinstance(submitted, str) and hmac.compare_digest(submitted, session.csrf_token)


def bearer_token(request: Request) -> Any:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token if scheme.lower() == "bearer" and token else None
