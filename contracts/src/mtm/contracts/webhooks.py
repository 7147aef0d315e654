"""How mtm signs webhooks, part of the public contract: Standard Webhooks (`webhook-id`, `-timestamp`, `-signature`)."""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError

WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
# What receivers refuse: a timestamp further than this from their clock (the Standard Webhooks library's window).
TOLERANCE_S = 300
_STANDARD_SECRET_PREFIX = "whsec_"


def _webhook(secret: bytes | str) -> Webhook:
    """A secret in the standard form (`whsec_<base64>`) is decoded as the spec says; any other is the key's bytes."""
    if isinstance(secret, bytes):
        secret = secret.decode() if secret.startswith(_STANDARD_SECRET_PREFIX.encode()) else secret
    if isinstance(secret, str) and not secret.startswith(_STANDARD_SECRET_PREFIX):
        secret = secret.encode()
    return Webhook(secret)


def signed_headers(secret: bytes | str, webhook_id: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    """The three headers of one delivery. `webhook_id` is the notification id: the same on every retry, so a
    receiver deduplicates by it (the Standard Webhooks idempotency key); `at` defaults to now."""
    timestamp = (at or datetime.now(UTC)).astimezone(UTC)
    return {
        WEBHOOK_ID_HEADER: webhook_id,
        WEBHOOK_TIMESTAMP_HEADER: str(int(timestamp.timestamp())),
        WEBHOOK_SIGNATURE_HEADER: _webhook(secret).sign(webhook_id, timestamp, body.decode()),
    }


def verify(secret: bytes | str, body: bytes, headers: Mapping[str, str]) -> str | None:
    """The webhook id when the signature is good and the timestamp within `TOLERANCE_S` of now, else None."""
    try:
        _webhook(secret).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, UnicodeDecodeError, binascii.Error, ValueError):
        return None
    return {name.lower(): value for name, value in headers.items()}[WEBHOOK_ID_HEADER]
