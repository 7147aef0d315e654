"""Delivery rules: which channels, what the physician receives, when to retry (signing: `mtm.contracts.webhooks`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mtm.contracts import ReferralRequested
from mtm.contracts.events import NotificationChannel, NotificationPurpose, NotificationRequest, Recommendation

_NAMESPACE = uuid.UUID("9c7e2a64-5f1b-4a8e-bb0e-3a8a0f6c5d42")
# Status codes worth retrying: the receiver may accept the same request later.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def notification_id(referral_id: uuid.UUID, channel: NotificationChannel, escalation: int = 0) -> uuid.UUID:
    """Stable per referral, channel and escalation, so redelivery never creates a second notification."""
    if escalation:
        return uuid.uuid5(_NAMESPACE, f"{referral_id}:{channel}:reminder:{escalation}")
    return uuid.uuid5(_NAMESPACE, f"{referral_id}:{channel}")


def derived_event_id(kind: str, notification: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{notification}")


class HowToAnswer(BaseModel):
    nats_subject: str = Field(description="Where to send the answer (request/reply).")
    command: Literal["AnswerReferral"] = "AnswerReferral"


class PhysicianNotification(BaseModel):
    """What a physician's endpoint receives (webhook body, NATS inbox message): a referral and how to answer it.

    `referral_message` writes it; this model describes it (the notify service's AsyncAPI document)."""

    model_config = ConfigDict(extra="forbid", title="PhysicianNotification")

    notification_id: uuid.UUID = Field(description="Also the webhook-id and Nats-Msg-Id: the same on every retry.")
    kind: NotificationPurpose
    referral_id: uuid.UUID
    patient: str = Field(description="FHIR reference of the patient: `Patient/<id>`.")
    physician_id: str
    pharmacist_id: str
    priority: str
    recommendation: Recommendation
    task_id: uuid.UUID
    requested_at: datetime
    correlation_id: uuid.UUID
    answer: HowToAnswer


def referral_message(
    event: ReferralRequested, notification: uuid.UUID, answer_subject: str, purpose: NotificationPurpose = "referral"
) -> bytes:
    """What the physician's endpoint receives: the referral (FHIR ServiceRequest-shaped) and how to answer."""
    referral = event.data
    body = {
        "notification_id": str(notification),
        "kind": purpose,
        "referral_id": str(referral.referral_id),
        "patient": event.subject,
        "physician_id": referral.physician_id,
        "pharmacist_id": referral.pharmacist_id,
        "priority": referral.priority,
        "recommendation": referral.recommendation.model_dump(mode="json"),
        "task_id": str(referral.task_id),
        "requested_at": event.time.isoformat(),
        "correlation_id": str(event.correlation_id),
        "answer": {"nats_subject": answer_subject, "command": "AnswerReferral"},
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_delay_s: float
    max_delay_s: float

    def delay_after(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s))


@dataclass(frozen=True)
class Attempted:
    """A notification as a worker attempts it: which one, for whom, the how-many-th attempt, when it started."""

    request: NotificationRequest
    patient_id: str
    correlation_id: uuid.UUID
    requested_event_id: uuid.UUID
    attempt: int
    started_at: datetime


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    retryable: bool
    detail: str
    status_code: int | None = None


def classify_http(status_code: int) -> AttemptResult:
    if 200 <= status_code < 300:
        return AttemptResult(ok=True, retryable=False, detail=f"HTTP {status_code}", status_code=status_code)
    return AttemptResult(
        ok=False, retryable=status_code in RETRYABLE_STATUS, detail=f"HTTP {status_code}", status_code=status_code
    )


NextStep = Literal["delivered", "retry", "failed"]


def next_step(result: AttemptResult, attempt: int, policy: RetryPolicy) -> NextStep:
    if result.ok:
        return "delivered"
    if result.retryable and attempt < policy.max_attempts:
        return "retry"
    return "failed"


def next_attempt_at(now: datetime, attempt: int, policy: RetryPolicy) -> datetime:
    return now + policy.delay_after(attempt)


@dataclass(frozen=True)
class Contact:
    """How a practitioner is reached, as the practitioner directory says."""

    practitioner_id: str
    email: str | None = None
    webhook_url: str | None = None
    channels: tuple[NotificationChannel, ...] | None = None


def channels_for(
    contact: Contact | None, *, webhooks: bool, webhook_for_everyone: bool, email: bool
) -> tuple[NotificationChannel, ...]:
    """The channels a referral goes out on.

    A directory entry that lists channels is followed as it is (a channel that cannot be used then fails, and the
    failure reaches the pharmacist's worklist). Otherwise: a signed webhook when one is known, an email when the
    practitioner has an address and email is set up, and always the physician's NATS inbox.
    """
    if contact is not None and contact.channels is not None:
        return contact.channels
    found: list[NotificationChannel] = []
    if webhooks and (webhook_for_everyone or (contact is not None and contact.webhook_url)):
        found.append("webhook")
    if email and contact is not None and contact.email:
        found.append("email")
    found.append("nats")
    return tuple(found)


EMAIL_SUBJECTS: dict[NotificationPurpose, str] = {
    "referral": "A medication recommendation awaits your review",
    "reminder": "Reminder: a medication recommendation still awaits your review",
}


def referral_email(
    *, notification: uuid.UUID, link: str, purpose: NotificationPurpose, sender: str, recipient: str
) -> EmailMessage:
    """The email a physician receives: no patient information at all (minimum necessary), only that a pharmacist's
    recommendation awaits and where to read it after signing in. Its Message-ID is the notification's, the same
    on every attempt, so a mail client shows a retried message once."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = EMAIL_SUBJECTS[purpose]
    message["Message-ID"] = f"<{notification}@mtm.notify>"
    opening = (
        "A pharmacist has sent you a medication therapy recommendation that awaits your review."
        if purpose == "referral"
        else "A pharmacist's medication therapy recommendation sent to you is still unanswered."
    )
    message.set_content(
        f"{opening}\n\nRead and answer it here (you will be asked to sign in):\n{link}\n\n"
        "This message carries no patient information by design.\n"
    )
    return message


def classify_smtp(code: int | None, error: str) -> AttemptResult:
    """A refusal with a 4xx code may pass later; a 5xx (bad address, refused credentials) will not. No code: the
    server could not be reached or hung up, worth retrying."""
    if code is None:
        return AttemptResult(ok=False, retryable=True, detail=error)
    return AttemptResult(ok=False, retryable=400 <= code < 500, detail=f"SMTP {code}", status_code=code)
