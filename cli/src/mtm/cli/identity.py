"""Who the `mtm` command acts as: a token from the web app (`mtm login`), accounts (`mtm user add`), and the
local stack's keys that `mtm up` makes.

Services act only on commands that carry a verified actor token, and only the web app signs them: `mtm login`
signs in there with the account's password and keeps the token it gets. For the local stack `mtm up` makes
the web app's signing key (the services are given its public key) and its session secret under the data
directory; in production both come from the web app's settings.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mtm.cli.stack import data_dir, stack_value
from mtm.platform.identity import generate_keypair
from mtm.platform.settings import DEFAULT_DATABASE_URL, with_database

DEFAULT_WEB_URL = "http://127.0.0.1:8000"
# Seconds to reach the web app or the accounts database before saying the stack is not up.
CONNECT_TIMEOUT_S = 3.0


class LoginError(Exception):
    """Signing in did not work; the message says why (never the password)."""


class Unreachable(LoginError):
    """The web app (or its database) does not answer."""


def keys_dir() -> Path:
    return data_dir() / "keys"


def public_key_file() -> Path:
    return keys_dir() / "actor-signing.pub.pem"


def private_key_file() -> Path:
    return keys_dir() / "actor-signing.pem"


def session_secret_file() -> Path:
    return keys_dir() / "web-session.secret"


def _private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def ensure_dev_keys() -> Path:
    """The local stack's token signing key and web session secret (made once, readable by this user only)."""
    folder = keys_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = private_key_file(), public_key_file()
    if not private.exists() or not public.exists():
        private_pem, public_pem = generate_keypair()
        _private(private, private_pem)
        public.write_text(public_pem)
    if not session_secret_file().exists():
        _private(session_secret_file(), secrets.token_urlsafe(48))
    return public


def ensure_key_encryption_key() -> Path:
    """The local stack's key-encryption key (reconciliation wraps patients' event keys with it), made once."""
    path = keys_dir() / "key-encryption-key"
    if not path.exists():
        keys_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(os.urandom(32)).decode())
    return path


def token_file() -> Path:
    return data_dir() / "token"


def web_url() -> str:
    """Where the web app answers: MTM_WEB_URL, else the one `mtm up` started, else the default port."""
    return (os.environ.get("MTM_WEB_URL") or stack_value("web_url") or DEFAULT_WEB_URL).rstrip("/")


def read_password(prompt: str = "Password: ") -> str:
    """`MTM_PASSWORD`, else asked at the terminal, else the first line of standard input."""
    if (found := os.environ.get("MTM_PASSWORD")) is not None:
        return found
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


@dataclass(frozen=True)
class LoggedIn:
    user_id: str
    role: str
    practitioner_id: str | None
    expires_at: str


def login(user_id: str, password: str, url: str | None = None) -> LoggedIn:
    """Sign in at the web app; the token it signs is kept for the other commands (file readable by you only)."""
    target = f"{url or web_url()}/api/login"
    try:
        response = httpx.post(
            target,
            json={"user": user_id, "password": password},
            timeout=httpx.Timeout(30, connect=CONNECT_TIMEOUT_S),
        )
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the web app at {target} ({type(exc).__name__}): is the stack up?") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        raise LoginError(body.get("error") or f"the web app answered HTTP {response.status_code}")
    path = token_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    _private(path, body["token"])
    return LoggedIn(body["user_id"], body["role"], body.get("practitioner_id"), body["expires_at"])


def current_token() -> str | None:
    """`MTM_TOKEN`, else the token `mtm login` saved."""
    if token := os.environ.get("MTM_TOKEN"):
        return token
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


def web_database_url() -> str:
    """The web app's accounts database: MTM_WEB_DATABASE_URL, else `mtm_web` on MTM_DATABASE_URL's server, else
    the one `mtm up` gave the web app (as the web app's own role), else `mtm_web` on the default server."""
    if found := os.environ.get("MTM_WEB_DATABASE_URL"):
        return found
    if server := os.environ.get("MTM_DATABASE_URL"):
        return with_database(server, "mtm_web")
    return stack_value("web_database_url") or with_database(DEFAULT_DATABASE_URL, "mtm_web")


async def _open_store() -> Any:
    """The accounts store, or `Unreachable` within seconds when its Postgres does not answer (opening it would
    otherwise retry for most of a minute, as a starting service does)."""
    import asyncpg

    from mtm.web.accounts import Store

    url = web_database_url()
    try:
        probe = await asyncpg.connect(with_database(url, "postgres"), timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
        host = url.split("@")[-1].split("/")[0]
        raise Unreachable(
            f"cannot reach the web app's database at {host} ({type(exc).__name__}): is the stack up?"
        ) from exc
    await probe.close()
    return await Store.open(url)


def add_user(user_id: str, role: str, practitioner_id: str | None, password: str, *, replace: bool = False) -> None:
    """Create (or with `replace`, reset) an account in the web app's database."""

    async def run() -> None:
        store = await _open_store()
        try:
            await store.add_account(user_id, role, practitioner_id, password, replace=replace)
        finally:
            await store.close()

    asyncio.run(run())


def list_users() -> list[dict[str, object]]:
    async def run() -> list[dict[str, object]]:
        store = await _open_store()
        try:
            return [
                {"user_id": a.user_id, "role": a.role, "practitioner_id": a.practitioner_id, "disabled": a.disabled}
                for a in await store.accounts()
            ]
        finally:
            await store.close()

    return asyncio.run(run())
