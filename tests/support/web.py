"""The web app in the test's event loop (uvicorn on a free loopback port), and a signed-in HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from mtm.devstack.infra import Infrastructure
from mtm.web.accounts import Store
from mtm.web.app import create_app
from mtm.web.settings import WebSettings
from support import actors

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_settings(infra: Infrastructure, **overrides: Any) -> WebSettings:
    """The web app as `mtm up` runs it: its own NATS user, its accounts database as its own role."""
    port = overrides.pop("web_port", None) or free_port()
    values: dict[str, Any] = {
        **infra.nats_settings("web"),
        "database_url": infra.database_url,
        "web_database_url": infra.service_database("web", f"t_web_{uuid.uuid4().hex[:8]}"),
        "web_host": "127.0.0.1",
        "web_port": port,
        "web_signing_key": actors.PRIVATE_KEY,
        "web_session_secret": secrets.token_urlsafe(32),
        "log_format": "console",
    }
    values.update(overrides)
    return WebSettings(**values)


@dataclass
class RunningWeb:
    settings: WebSettings
    app: Any

    @property
    def url(self) -> str:
        return self.settings.public_url

    @property
    def store(self) -> Store:
        return self.app.state.web.store

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=20)


@contextlib.asynccontextmanager
async def serving(app: Any, port: int, host: str = "127.0.0.1") -> AsyncIterator[uvicorn.Server]:
    """An ASGI app served by uvicorn in this event loop until the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # the test runner keeps its own
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=20)


@contextlib.asynccontextmanager
async def running_web(settings: WebSettings) -> AsyncIterator[RunningWeb]:
    app = create_app(settings)
    async with serving(app, settings.web_port, settings.web_host):
        yield RunningWeb(settings, app)


async def sign_in(client: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    """What a browser does: open the sign-in form (its CSRF cookie and token), post it."""
    page = await client.get("/login")
    token = CSRF.search(page.text)
    assert token, page.text
    return await client.post("/login", data={"user": user, "password": password, "csrf_token": token.group(1)})


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


ACCOUNTS = {
    "ana": ("pharmacist", "rph-ana", "ana-password-1"),
    "ben": ("pharmacist", "rph-ben", "ben-password-1"),
    "drlee": ("physician", "prac-pcp-42", "lee-password-1"),
    "drkim": ("physician", "prac-other-7", "kim-password-1"),
    "root": ("admin", None, "root-password-1"),
}


async def add_accounts(store: Store) -> None:
    for user, (role, practitioner, password) in ACCOUNTS.items():
        await store.add_account(user, role, practitioner, password, replace=True)


async def signed_in(web: RunningWeb, user: str) -> httpx.AsyncClient:
    client = web.client()
    response = await sign_in(client, user, ACCOUNTS[user][2])
    assert response.status_code == 303, response.text
    return client
