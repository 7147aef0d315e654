"""`mtm user add` and `mtm login` as a person runs them: accounts in the web app's database, a real sign-in over
HTTP (password from MTM_PASSWORD or standard input), the token kept for the other commands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import actors
from support.web import running_web, web_settings

from mtm.platform.identity import TokenVerifier

pytestmark = pytest.mark.integration


async def mtm(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The `mtm` command in its own process (the web app keeps answering in this event loop meanwhile)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mtm.cli.main", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_user_add_then_login_keeps_a_token_naming_the_account(infra, tmp_path: Path):
    settings = web_settings(infra)
    async with running_web(settings) as web:
        env = {
            **os.environ,
            "MTM_DATA_DIR": str(tmp_path),
            "MTM_WEB_URL": web.url,
            "MTM_WEB_DATABASE_URL": settings.accounts_database_url(),
        }
        env.pop("MTM_PASSWORD", None)
        env.pop("MTM_TOKEN", None)
        added = await mtm(
            {**env, "MTM_PASSWORD": "lee-password-9"},
            "user",
            "add",
            "drlee",
            "--role",
            "physician",
            "--practitioner-id",
            "prac-pcp-42",
        )
        assert added.returncode == 0, added.stderr
        missing = await mtm({**env, "MTM_PASSWORD": "x-password-9"}, "user", "add", "drx", "--role", "physician")
        assert missing.returncode == 2 and "practitioner id" in missing.stderr
        twice = await mtm({**env, "MTM_PASSWORD": "lee-password-9"}, "user", "add", "drlee", "--role", "admin")
        assert twice.returncode == 1 and "exists already" in twice.stderr
        from_stdin = await mtm(env, "user", "add", "ana", "--role", "pharmacist", stdin="ana-password-9\n")
        assert from_stdin.returncode == 0, from_stdin.stderr

        wrong = await mtm({**env, "MTM_PASSWORD": "not-it"}, "login", "drlee")
        assert wrong.returncode == 1 and "Wrong user name or password" in wrong.stderr
        assert not (tmp_path / "token").exists()
        ok = await mtm(env, "login", "drlee", stdin="lee-password-9\n")
        assert ok.returncode == 0, ok.stderr
        assert "logged in as drlee (physician, practitioner prac-pcp-42)" in ok.stdout
    token = tmp_path / "token"
    assert token.stat().st_mode & 0o077 == 0, "the token file is readable by its owner only"
    actor = TokenVerifier([actors.PUBLIC_KEY]).verify(f"Bearer {token.read_text()}")
    assert (actor.user_id, actor.role, actor.practitioner_id) == ("drlee", "physician", "prac-pcp-42")
