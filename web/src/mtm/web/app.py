"""The web app: pharmacists' worklist and tasks, physicians' referral inbox, accounts; a client of the services
over NATS only (its own database holds accounts and sessions, nothing clinical)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from nats.aio.client import Client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mtm.platform import tracing
from mtm.platform.identity import TokenIssuer
from mtm.platform.logging import configure_logging, get_logger, service_scope
from mtm.platform.metrics import Metrics, metrics_scope
from mtm.platform.probes import ProbeServer
from mtm.web import admin, auth, pharmacist, physician, reviews
from mtm.web.accounts import Session, Store
from mtm.web.live import LiveFeed
from mtm.web.oidc import Sso
from mtm.web.security import CSRF_FIELD, Cookies, LoginThrottle
from mtm.web.services import ServiceClient
from mtm.web.settings import WebSettings

log = get_logger(__name__)
PACKAGE = files("mtm.web")


def when(value: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime(fmt) + " UTC"


def ago(value: str | datetime | None) -> str:
    """`in 3 h`, `2 d ago`: how far a time is from now, roughly."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    seconds = (moment - datetime.now(UTC)).total_seconds()
    span = abs(seconds)
    unit = next(
        (f"{int(span // size)} {name}" for size, name in ((86400, "d"), (3600, "h"), (60, "min")) if span >= size),
        "now",
    )
    if unit == "now":
        return "now"
    return f"in {unit}" if seconds > 0 else f"{unit} ago"


def pager(params: Any, page: int) -> str:
    """The page's query string with another page number."""
    kept = [(k, v) for k, v in params.multi_items() if k != "page"]
    return urlencode([*kept, ("page", str(page))])


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=str(PACKAGE / "templates"))
    found.env.filters["when"] = when
    found.env.filters["ago"] = ago
    found.env.filters["pager"] = pager
    found.env.globals["csrf_field"] = CSRF_FIELD
    return found


@dataclass
class WebApp:
    """What the running app holds: settings, database, NATS, the token issuer, live feed, templates."""

    settings: WebSettings
    issuer: TokenIssuer
    cookies: Cookies
    pages: Jinja2Templates = field(default_factory=templates)
    store: Store | None = None
    nc: Client | None = None
    services: ServiceClient | None = None
    feed: LiveFeed | None = None
    throttle: LoginThrottle | None = None
    sso: Sso | None = None
    metrics: Metrics = field(default_factory=Metrics)
    probes: ProbeServer | None = None

    def render(
        self,
        request: Request,
        name: str,
        session: Session | None = None,
        *,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("notice", request.query_params.get("done"))
        return self.pages.TemplateResponse(
            request,
            name,
            {"session": session, "account": session.account if session else None, **context},
            status_code=status,
        )

    def fragment(self, name: str, **context: Any) -> str:
        return self.pages.get_template(name).render(**context)

    def forbidden(self, request: Request, session: Session | None, message: str) -> HTMLResponse:
        return self.render(request, "error.html", session, status=403, title="Not allowed", message=message)

    def not_found(self, request: Request, session: Session | None, message: str) -> HTMLResponse:
        return self.render(request, "error.html", session, status=404, title="Not found", message=message)


# Pages hold patient information: no caching anywhere, no framing, scripts and styles from this site only.
SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
)


class ResponseHeaders:
    """Security headers on every response, and `Server-Timing: app;dur=<ms>`: how long the app took until it
    began to answer (what the bench reads). Requests run in the web app's scope (log lines say `service: web`,
    counts go to its metrics), and are counted by route (its template, never a path with ids in it) and status."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        web: WebApp | None = scope["app"].state.web if "app" in scope else None
        metrics = web.metrics if web is not None else Metrics(process=False)
        with service_scope("web"), metrics_scope(metrics):
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            await self._http(scope, receive, send, metrics)

    async def _http(self, scope: Any, receive: Any, send: Any, metrics: Metrics) -> None:
        started = time.perf_counter()
        status = [500]

        async def timed(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                took = (time.perf_counter() - started) * 1000
                present = {name.lower() for name, _ in message["headers"]}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                timing = (b"server-timing", f"app;dur={took:.2f}".encode())
                message = {**message, "headers": [*message["headers"], *extra, timing]}
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.counter(
                "mtm_web_requests",
                "HTTP requests answered, by route template, method and status.",
                ("route", "method", "status"),
            ).labels(route, scope.get("method", ""), str(status[0])).inc()


async def healthz(request: Request) -> Response:
    web: WebApp = request.app.state.web
    ready = web.nc is not None and web.nc.is_connected and web.store is not None
    return JSONResponse({"ready": ready, "live_streams": web.feed.listeners if web.feed else 0}, 200 if ready else 503)


async def readiness(web: WebApp) -> tuple[bool, dict[str, Any]]:
    """Connected to NATS, and its database answers."""
    reasons = []
    if web.nc is None or not web.nc.is_connected:
        reasons.append("nats: not connected")
    if web.store is None:
        reasons.append("starting: database and NATS")
    else:
        try:
            async with asyncio.timeout(1.0), web.store.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except Exception as exc:
            reasons.append(f"postgres: not answering ({type(exc).__name__})")
    return not reasons, {"service": "web", "reasons": reasons, "live_streams": web.feed.listeners if web.feed else 0}


def create_app(settings: WebSettings | None = None) -> Starlette:
    settings = settings or WebSettings()
    configure_logging(None, settings.log_level, settings.log_format)
    if not tracing.enabled():
        tracing.configure_from_environment("web")
    web = WebApp(
        settings=settings,
        issuer=TokenIssuer(settings.signing_key()),
        cookies=Cookies(settings.session_secret(), secure=settings.secure_cookies, session_ttl=settings.session_ttl),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with service_scope("web"), metrics_scope(web.metrics):
            async with _running(app):
                yield

    @contextlib.asynccontextmanager
    async def _running(app: Starlette) -> AsyncIterator[None]:
        if settings.http_port is not None:

            async def ready() -> tuple[bool, dict[str, Any]]:
                return await readiness(web)

            async def metrics() -> bytes:
                web.metrics.gauge("mtm_web_live_streams", "Open live-update streams (browser tabs).").set(
                    web.feed.listeners if web.feed else 0
                )
                return web.metrics.render()

            web.probes = ProbeServer(host=settings.http_host, port=settings.http_port, ready=ready, metrics=metrics)
            await web.probes.start()
        web.store = await Store.open(settings.accounts_database_url())
        web.throttle = LoginThrottle(
            web.store,
            per_account=settings.web_login_max_failures,
            per_address=settings.web_login_max_failures_per_ip,
            window=timedelta(seconds=settings.web_login_window_s),
        )
        web.nc = await settings.nats().connect(max_reconnect_attempts=-1, name="mtm-web")
        web.services = ServiceClient(
            web.nc, web.issuer, token_ttl_s=settings.web_token_ttl_s, timeout_s=settings.web_request_timeout_s
        )
        web.feed = LiveFeed(web.nc)
        await web.feed.start()
        web.sso = Sso.configure(settings)
        log.info("web app started", url=settings.public_url)
        try:
            yield
        finally:
            await web.feed.stop()
            await web.nc.drain()
            await web.store.close()
            if web.probes is not None:
                await web.probes.stop()
            log.info("web app stopped")

    routes = [
        Route("/", auth.home),
        Route("/healthz", healthz),
        *auth.routes,
        *pharmacist.routes,
        *reviews.routes,
        *physician.routes,
        *admin.routes,
        Mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static"),
    ]
    middleware = [Middleware(ResponseHeaders), *Sso.middleware(settings)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.web = web
    return app
