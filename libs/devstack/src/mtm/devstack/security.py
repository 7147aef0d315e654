"""The dev stack's secrets: a password per NATS user and per Postgres role, and the local CA, made per stack.

Kept under the stack's data directory (`secrets.json` and the keys readable by their owner only), so a restarted
`mtm up` and the `mtm` commands find them; nothing here is a default anyone else knows.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from mtm.devstack.tls import Issued, LocalCA, write_private
from mtm.platform.access import ACCESS, AccessTable, password_variable
from mtm.platform.connection import NatsClient


def new_password() -> str:
    """URL-safe (it goes into database URLs unquoted) and long enough never to be guessed."""
    return secrets.token_urlsafe(24)


class LocalSecurity:
    """Passwords (`secrets.json`) and certificates (`tls/`) of one stack under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = LocalCA(directory / "tls")
        self._cache: dict[str, dict[str, str]] | None = None

    @property
    def file(self) -> Path:
        return self.directory / "secrets.json"

    @property
    def ca_file(self) -> Path:
        return self.ca.ensure().cert_file

    def server_certificate(self, name: str) -> Issued:
        return self.ca.issue(name)

    def _load(self) -> dict[str, dict[str, str]]:
        if self._cache is None:
            try:
                self._cache = json.loads(self.file.read_text())
            except FileNotFoundError:
                self._cache = {}
        return self._cache

    def _password(self, kind: str, name: str) -> str:
        found = self._load().setdefault(kind, {})
        if name not in found:
            found[name] = new_password()
            write_private(self.file, json.dumps(self._load()).encode())
        return found[name]

    def nats_password(self, user: str) -> str:
        return self._password("nats", user)

    def postgres_password(self, role: str) -> str:
        return self._password("postgres", role)

    def nats_environment(self, table: AccessTable = ACCESS) -> dict[str, str]:
        """What the server's configuration takes the passwords from (`$MTM_NATS_PASSWORD_<USER>`).

        nats-server reads a variable's value as configuration, so each password is given as a quoted string.
        """
        return {password_variable(user): json.dumps(self.nats_password(user)) for user in table.users()}

    def nats_client(self, url: str, user: str) -> NatsClient:
        return NatsClient(url=url, user=user, password=self.nats_password(user), tls_ca=str(self.ca_file))
