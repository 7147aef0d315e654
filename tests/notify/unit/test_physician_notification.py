"""What a physician's endpoint receives is what notify's AsyncAPI document describes (`PhysicianNotification`)."""

from __future__ import annotations

import json
import uuid

import pytest
from support.events import referral_requested

from mtm.contracts.subjects import ANSWER_REFERRAL
from mtm.notify.domain.delivery import PhysicianNotification, referral_message

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("purpose", ["referral", "reminder"])
def test_the_message_sent_is_the_documented_model(purpose: str) -> None:
    event = referral_requested("p-1")
    body = referral_message(event, uuid.uuid4(), ANSWER_REFERRAL, purpose)
    parsed = PhysicianNotification.model_validate_json(body)  # extra fields are forbidden: nothing undocumented
    sent = json.loads(body)
    assert {k: v for k, v in parsed.model_dump(mode="json").items() if k != "requested_at"} == {
        k: v for k, v in sent.items() if k != "requested_at"
    }
    assert parsed.requested_at == event.time and parsed.recommendation == event.data.recommendation
