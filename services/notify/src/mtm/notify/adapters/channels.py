"""The delivery channels: signed HTTP webhook, the physician's JetStream inbox, and email over SMTP."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib
import httpx
from nats.js import JetStreamContext

from mtm.contracts.subjects import physician_inbox_subject
from mtm.contracts.webhooks import signed_headers
from mtm.notify.domain.delivery import AttemptResult, classify_http, classify_smtp
from mtm.platform import tracing
from mtm.platform.outbox import MSG_ID_HEADER


class WebhookChannel:
    def __init__(self, client: httpx.AsyncClient, secret: bytes) -> None:
        self._client = client
        self._secret = secret

    async def deliver(self, url: str, body: bytes, notification_id: str) -> AttemptResult:
        # The notification id is the webhook-id: receivers deduplicate retries by it.
        headers = {
            "Content-Type": "application/json",
            **signed_headers(self._secret, notification_id, body),
            # The receiver may continue the referral's trace (W3C trace context); nothing when tracing is off.
            **tracing.current_headers(),
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.LocalProtocolError, ValueError) as exc:
            # The endpoint itself is wrong (e.g. a recipient id that makes no URL): asking again will not help.
            return AttemptResult(ok=False, retryable=False, detail=f"bad endpoint ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return AttemptResult(ok=False, retryable=True, detail=f"{type(exc).__name__}")
        except Exception as exc:
            # Whatever else one attempt raises must not take the other notifications of the round with it.
            return AttemptResult(ok=False, retryable=True, detail=f"{type(exc).__name__}")
        return classify_http(response.status_code)


class NatsInboxChannel:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def deliver(self, recipient_id: str, body: bytes, notification_id: str) -> AttemptResult:
        try:
            ack = await self._js.publish(
                physician_inbox_subject(recipient_id),
                body,
                headers={**tracing.current_headers(), MSG_ID_HEADER: notification_id},
                timeout=5,
            )
        except Exception as exc:
            return AttemptResult(ok=False, retryable=True, detail=type(exc).__name__)
        return AttemptResult(ok=True, retryable=False, detail="duplicate" if ack.duplicate else f"seq {ack.seq}")


@dataclass(frozen=True)
class SmtpServer:
    """Where mail is submitted: STARTTLS (certificate checked against `ca_file` or the system's CAs) and a login."""

    host: str
    port: int
    username: str | None
    password: str | None
    starttls: bool = True
    ca_file: str | None = None
    timeout_s: float = 10.0

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


class EmailChannel:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server
        self._tls = server.tls_context() if server.starttls else None

    async def deliver(self, message: EmailMessage) -> AttemptResult:
        server = self._server
        try:
            await aiosmtplib.send(
                message,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                start_tls=server.starttls,
                tls_context=self._tls,
                timeout=server.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            return classify_smtp(max(codes) if codes else 550, type(exc).__name__)
        except aiosmtplib.SMTPResponseException as exc:
            return classify_smtp(exc.code, type(exc).__name__)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return classify_smtp(None, type(exc).__name__)
        return AttemptResult(ok=True, retryable=False, detail="SMTP 250")
