"""Delivery rules: which channels, what the physician receives, when to retry (signing: `mtm.contracts.webhooks`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from mtm.contracts import ReferralRequested
from mtm.contracts.events import NotificationChannel, NotificationRequest

_NAMESPACE = uuid.UUID("9c7e2a64-5f1b-4a8e-bb0e-3a8a0f6c5d42")
# Status codes worth retrying: the receiver may accept the same request later.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def notification_id(referral_id: uuid.UUID, channel: NotificationChannel) -> uuid.UUID:
    """Stable per referral and channel, so redelivery never creates a second notification."""
    return uuid.uuid5(_NAMESPACE, f"{referral_id}:{channel}")


def derived_event_id(kind: str, notification: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{kind}:{notification}")


def referral_message(event: ReferralRequested, notification: uuid.UUID, answer_subject: str) -> bytes:
    """What the physician's endpoint receives: the referral (FHIR ServiceRequest-shaped) and how to answer."""
    referral = event.data
    body = {
        "notification_id": str(notification),
        "kind": "referral",
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
