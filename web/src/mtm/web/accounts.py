"""Accounts, sessions and failed sign-ins in the web app's own database.

Passwords are hashed with argon2id (argon2-cffi). A session is a random id: the browser holds it in a signed
cookie, the database only its SHA-256, with the CSRF token of every form of that session and its expiry.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import ValidationError

from mtm.contracts.identity import Actor, Role
from mtm.platform.db import apply_migrations, create_pool

ROLES: tuple[Role, ...] = ("pharmacist", "physician", "admin")
INSERT_ACCOUNT = """
INSERT INTO accounts (user_id, role, practitioner_id, password_hash) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id) DO NOTHING RETURNING user_id
"""
REPLACE_ACCOUNT = """
INSERT INTO accounts (user_id, role, practitioner_id, password_hash) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id) DO UPDATE
SET role = EXCLUDED.role, practitioner_id = EXCLUDED.practitioner_id, password_hash = EXCLUDED.password_hash,
    disabled = false
"""
SELECT_ACCOUNT = "SELECT user_id, role, practitioner_id, password_hash, disabled FROM accounts WHERE user_id = $1"
LIST_ACCOUNTS = "SELECT user_id, role, practitioner_id, password_hash, disabled FROM accounts ORDER BY role, user_id"
SET_HASH = "UPDATE accounts SET password_hash = $2 WHERE user_id = $1"
INSERT_SESSION = """
INSERT INTO sessions (session_hash, user_id, csrf_token, via, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
"""
SELECT_SESSION = """
SELECT a.user_id, a.role, a.practitioner_id, a.password_hash, a.disabled, s.csrf_token, s.expires_at
FROM sessions s JOIN accounts a USING (user_id)
WHERE s.session_hash = $1 AND s.expires_at > $2 AND NOT a.disabled
"""
DELETE_SESSION = "DELETE FROM sessions WHERE session_hash = $1"
DELETE_EXPIRED_SESSIONS = "DELETE FROM sessions WHERE expires_at <= $1"
INSERT_FAILURE = "INSERT INTO login_failures (key, failed_at) SELECT unnest($1::text[]), $2"
COUNT_FAILURES = """
SELECT key, count(*) AS failures, min(failed_at) AS first FROM login_failures
WHERE key = ANY($1::text[]) AND failed_at > $2 GROUP BY key
"""
CLEAR_FAILURES = "DELETE FROM login_failures WHERE key = $1"
FORGET_OLD_FAILURES = "DELETE FROM login_failures WHERE failed_at <= $1"


class AccountError(ValueError):
    """An account that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Account:
    user_id: str
    role: Role
    practitioner_id: str | None = None
    disabled: bool = False
    has_password: bool = True

    @property
    def actor(self) -> Actor:
        return Actor(user_id=self.user_id, role=self.role, practitioner_id=self.practitioner_id)

    @property
    def home(self) -> str:
        return {"pharmacist": "/worklist", "physician": "/referrals", "admin": "/admin"}[self.role]


def _account(row: asyncpg.Record) -> Account:
    return Account(
        row["user_id"], row["role"], row["practitioner_id"], row["disabled"], row["password_hash"] is not None
    )


def validate_account(user_id: str, role: str, practitioner_id: str | None) -> Account:
    """The account as an actor token will name it; raises AccountError saying what is wrong."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if role == "physician" and not practitioner_id:
        raise AccountError("a physician needs a practitioner id (--practitioner-id): referrals are addressed to it")
    try:
        Actor(user_id=user_id, role=role, practitioner_id=practitioner_id or None)  # type: ignore[arg-type]
    except ValidationError as exc:
        field = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise AccountError(f"{field}: {exc.errors()[0]['msg']}") from exc
    return Account(user_id, role, practitioner_id or None)  # type: ignore[arg-type]


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


@dataclass(frozen=True)
class Session:
    session_id: str
    account: Account
    csrf_token: str
    expires_at: datetime


class Store:
    """The web app's database: accounts, sessions, failed sign-ins."""

    def __init__(self, pool: asyncpg.Pool, hasher: PasswordHasher | None = None) -> None:
        self.pool = pool
        self._hasher = hasher or PasswordHasher()
        # Verified against when the account does not exist, so a wrong name costs as long as a wrong password.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    async def open(cls, database_url: str) -> Store:
        pool = await create_pool(database_url, min_size=1, max_size=8)
        await apply_migrations(pool, [("web", files("mtm.web") / "migrations")])
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    # --- accounts -------------------------------------------------------------------------------------------

    async def add_account(
        self, user_id: str, role: str, practitioner_id: str | None, password: str | None, *, replace: bool = False
    ) -> Account:
        account = validate_account(user_id, role, practitioner_id)
        if password is not None and len(password) < 8:
            raise AccountError("a password needs at least 8 characters")
        hashed = await asyncio.to_thread(self._hasher.hash, password) if password is not None else None
        async with self.pool.acquire() as conn:
            if replace:
                await conn.execute(REPLACE_ACCOUNT, user_id, role, account.practitioner_id, hashed)
            elif await conn.fetchval(INSERT_ACCOUNT, user_id, role, account.practitioner_id, hashed) is None:
                raise AccountError(f"an account named {user_id!r} exists already")
        return account

    async def account(self, user_id: str) -> Account | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_ACCOUNT, user_id)
        return _account(row) if row is not None else None

    async def accounts(self) -> list[Account]:
        async with self.pool.acquire() as conn:
            return [_account(row) for row in await conn.fetch(LIST_ACCOUNTS)]

    async def authenticate(self, user_id: str, password: str) -> Account | None:
        """The account when the password is right and the account enabled; None otherwise, in about equal time."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_ACCOUNT, user_id)
        stored = row["password_hash"] if row is not None and row["password_hash"] else self._decoy
        try:
            await asyncio.to_thread(self._hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or not row["password_hash"] or row["disabled"]:
            return None
        if self._hasher.check_needs_rehash(stored):
            rehashed = await asyncio.to_thread(self._hasher.hash, password)
            async with self.pool.acquire() as conn:
                await conn.execute(SET_HASH, user_id, rehashed)
        return _account(row)

    # --- sessions -------------------------------------------------------------------------------------------

    async def start_session(self, account: Account, *, via: str, ttl: timedelta) -> Session:
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            await conn.execute(DELETE_EXPIRED_SESSIONS, now)
            await conn.execute(INSERT_SESSION, session_hash(session_id), account.user_id, csrf, via, now, now + ttl)
        return Session(session_id, account, csrf, now + ttl)

    async def session(self, session_id: str) -> Session | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(SELECT_SESSION, session_hash(session_id), datetime.now(UTC))
        if row is None:
            return None
        return Session(session_id, _account(row), row["csrf_token"], row["expires_at"])

    async def end_session(self, session_id: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(DELETE_SESSION, session_hash(session_id))

    # --- failed sign-ins ------------------------------------------------------------------------------------

    async def failures(self, keys: list[str], window: timedelta) -> dict[str, tuple[int, datetime]]:
        """Failed sign-ins per key within the window: how many, and the oldest (when the window frees up)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(COUNT_FAILURES, keys, datetime.now(UTC) - window)
        return {r["key"]: (r["failures"], r["first"]) for r in rows}

    async def record_failure(self, keys: list[str], window: timedelta) -> None:
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(FORGET_OLD_FAILURES, now - window)
            await conn.execute(INSERT_FAILURE, keys, now)

    async def clear_failures(self, key: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(CLEAR_FAILURES, key)
