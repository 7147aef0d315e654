"""How every mtm client reaches NATS: its user and password, TLS verified against the configured CA, its own inbox.

Services, the CLI, the web app and the tests all connect through `NatsClient`, so none of them can forget the
credentials, the certificate check or the private inbox (`_INBOX.<user>`), which the server's permissions require.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, SecretStr

from mtm.platform.access import inbox_prefix

if TYPE_CHECKING:
    from nats.aio.client import Client


class _QuietTlsEof(logging.Filter):
    """nats-py upgrades a connection to TLS after the server's INFO, so asyncio's stream protocol does not know it
    runs over TLS and asyncio warns at every close that its end-of-file answer has no effect. Nothing is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietTlsEof())


class NatsClient(BaseModel):
    """One client's connection settings; `password` never shows in a repr or a log."""

    model_config = ConfigDict(frozen=True)

    url: str
    user: str | None = None
    password: SecretStr | None = None
    tls_ca: str | None = None
    """CA bundle (PEM) the server's certificate is verified against; the system's CAs when unset."""
    tls_cert: str | None = None
    """Client certificate (PEM), for servers that require mutual TLS."""
    tls_key: str | None = None

    @property
    def servers(self) -> list[str]:
        """Every seed URL (`MTM_NATS_URL` may list several, comma-separated)."""
        return [part.strip() for part in self.url.split(",") if part.strip()]

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert) or any(s.startswith("tls://") for s in self.servers)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A context that verifies the server (hostname and chain), with the client certificate when given."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca)
        if self.tls_cert:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.user)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.connect`."""
        options: dict[str, Any] = {"servers": self.servers, "inbox_prefix": self.inbox_prefix}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password.get_secret_value() if self.password else ""
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
        return options

    async def connect(self, **extra: Any) -> Client:
        import nats

        return await nats.connect(**{**self.options(), **extra})

    def broker_options(self) -> dict[str, Any]:
        """Keyword arguments for FastStream's `NatsBroker`: the servers, the security, the inbox."""
        from faststream.nats import NatsBroker  # noqa: F401  (the security classes need faststream.nats loaded)
        from faststream.nats.security import NatsSecurity, NatsUserPassword

        context = self.ssl_context()
        security: NatsSecurity | None = None
        if self.user is not None:
            password = self.password.get_secret_value() if self.password else ""
            security = NatsUserPassword(self.user, password, ssl_context=context)
        elif context is not None:
            security = NatsSecurity(ssl_context=context)
        return {"servers": self.servers, "security": security, "inbox_prefix": self.inbox_prefix}

    def redacted(self) -> str:
        """What may be shown to a person: the URL and the user, never the password."""
        who = f" as {self.user}" if self.user else " (no user)"
        return f"{self.url}{who}{' (TLS)' if self.uses_tls else ''}"
