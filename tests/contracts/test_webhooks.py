"""The webhook signature scheme in the contracts: Standard Webhooks, verifiable by any receiver's library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from mtm.contracts.webhooks import (
    TOLERANCE_S,
    WEBHOOK_ID_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER,
    signed_headers,
    verify,
)

pytestmark = pytest.mark.unit
BODY = b'{"kind":"referral","notification_id":"9b2f"}'
SECRET = "a-site-secret"


def test_a_signed_delivery_verifies_and_names_its_webhook_id() -> None:
    headers = signed_headers(SECRET.encode(), "9b2f", BODY)
    assert set(headers) == {WEBHOOK_ID_HEADER, WEBHOOK_TIMESTAMP_HEADER, WEBHOOK_SIGNATURE_HEADER}
    assert verify(SECRET, BODY, headers) == "9b2f"
    # Header names are case-insensitive on the wire.
    assert verify(SECRET, BODY, {name.title(): value for name, value in headers.items()}) == "9b2f"


def test_the_specs_published_vector_is_reproduced() -> None:
    headers = signed_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        b'{"test": 2432232314}',
        at=datetime.fromtimestamp(1614265330, UTC),
    )
    assert headers[WEBHOOK_TIMESTAMP_HEADER] == "1614265330"
    assert headers[WEBHOOK_SIGNATURE_HEADER] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_receiver_with_a_standard_webhooks_library_verifies_a_plain_text_secret_in_its_standard_form() -> None:
    headers = signed_headers(SECRET.encode(), "9b2f", BODY)
    standard_form = "whsec_" + base64.b64encode(SECRET.encode()).decode()
    Webhook(standard_form).verify(BODY, headers)
    assert verify(standard_form, BODY, headers) == "9b2f"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: ("another-secret", b, h), id="wrong secret"),
        pytest.param(lambda h, b: (SECRET, b + b" ", h), id="changed body"),
        pytest.param(lambda h, b: (SECRET, b, {**h, WEBHOOK_ID_HEADER: "other"}), id="other webhook-id"),
        pytest.param(lambda h, b: (SECRET, b, {**h, WEBHOOK_SIGNATURE_HEADER: "v1,bm90LWl0"}), id="bad signature"),
        pytest.param(lambda h, b: (SECRET, b, {**h, WEBHOOK_SIGNATURE_HEADER: "garbage"}), id="garbled header"),
        pytest.param(lambda h, b: (SECRET, b, {**h, WEBHOOK_TIMESTAMP_HEADER: "soon"}), id="garbled timestamp"),
        pytest.param(
            lambda h, b: (SECRET, b, {k: v for k, v in h.items() if k != WEBHOOK_SIGNATURE_HEADER}), id="unsigned"
        ),
        pytest.param(lambda h, b: (SECRET, b"\xff" + b, h), id="not UTF-8"),
    ],
)
def test_a_receiver_refuses_what_was_not_signed_with_its_secret(tamper) -> None:
    secret, body, headers = tamper(signed_headers(SECRET, "9b2f", BODY), BODY)
    assert verify(secret, body, headers) is None


@pytest.mark.parametrize("offset_s", [-(TOLERANCE_S + 60), TOLERANCE_S + 60])
def test_a_receiver_refuses_a_stale_or_future_timestamp(offset_s: int) -> None:
    at = datetime.now(UTC) + timedelta(seconds=offset_s)
    assert verify(SECRET, BODY, signed_headers(SECRET, "9b2f", BODY, at=at)) is None
