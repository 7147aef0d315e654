"""Notify service on real NATS, Postgres and a real HTTP receiver: signed, retried, never delivered twice."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import declare_as_owner
from support.events import new_patient_id, publish_event, referral_requested
from support.jetstream import Collector, stream_messages, wait_for
from support.webhook import WebhookReceiver, serve

from mtm.contracts import NotificationDelivered, NotificationFailed
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter, physician_inbox_subject
from mtm.contracts.webhooks import WEBHOOK_ID_HEADER, verify
from mtm.notify.bootstrap import create_app
from mtm.notify.settings import NotifySettings
from mtm.platform.streams import PATIENT_EVENTS

pytestmark = pytest.mark.integration
SECRET = "test-secret-not-for-production"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    yield from serve(WebhookReceiver())


def notify_settings(settings_for, receiver: WebhookReceiver, **overrides) -> NotifySettings:
    return settings_for(
        NotifySettings,
        notify_webhook_url=receiver.url,
        notify_webhook_secret=SECRET,
        notify_backoff_base_s=0.05,
        notify_poll_s=0.05,
        **overrides,
    )


async def outcomes(nc, cls):
    return [
        cls.model_validate_json(m.data) for m in await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(cls))
    ]


async def test_a_referral_reaches_the_physician_once_by_signed_webhook_and_inbox(
    clean_jetstream, settings_for, run_service, receiver
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    inbox = await Collector().start(nc, physician_inbox_subject("dr-house"))
    event = referral_requested(new_patient_id())
    settings = notify_settings(settings_for, receiver)
    async with run_service(create_app(settings)):
        await publish_event(nc, event)
        await publish_event(nc, event)  # a producer retry: dropped by Nats-Msg-Id
        delivered = await wait_for(lambda: _at_least(nc, NotificationDelivered, 2))
    async with run_service(create_app(settings)):
        await publish_event(nc, referral_requested(new_patient_id(), physician="dr-other"))
        await wait_for(lambda: _at_least(nc, NotificationDelivered, 4))
    await inbox.stop()

    posts = [r for r in receiver.received if "dr-house" in r.path]
    assert len(posts) == 1
    post = posts[0]
    body = json.loads(post.body)
    assert verify(SECRET, post.body, post.headers) == body["notification_id"]
    assert verify("wrong", post.body, post.headers) is None
    assert body["referral_id"] == str(event.data.referral_id)
    assert post.header(WEBHOOK_ID_HEADER) == body["notification_id"]
    assert len(inbox.messages) == 1
    assert json.loads(inbox.messages[0].data)["referral_id"] == str(event.data.referral_id)
    assert sorted(d.data.channel for d in delivered[:2]) == ["nats", "webhook"]


async def _at_least(nc, cls, n):
    found = await outcomes(nc, cls)
    return found if len(found) >= n else None


async def test_a_failing_endpoint_is_retried_with_backoff(clean_jetstream, settings_for, run_service, receiver):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    receiver.statuses.extend([503, 500])
    async with run_service(create_app(notify_settings(settings_for, receiver))):
        await publish_event(nc, referral_requested(new_patient_id()))
        delivered = await wait_for(lambda: _at_least(nc, NotificationDelivered, 2))
    webhook = next(d for d in delivered if d.data.channel == "webhook")
    assert webhook.data.attempts == 3
    assert len(receiver.received) == 3
    assert len(receiver.distinct_keys()) == 1


async def test_a_refusing_endpoint_fails_the_notification_with_its_reason(
    clean_jetstream, settings_for, run_service, receiver
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    receiver.statuses.append(410)
    async with run_service(create_app(notify_settings(settings_for, receiver))):
        await publish_event(nc, referral_requested(new_patient_id()))
        (failed,) = await wait_for(lambda: _at_least(nc, NotificationFailed, 1))
    assert failed.data.channel == "webhook" and failed.data.reason == "HTTP 410" and failed.data.attempts == 1
    assert len(receiver.received) == 1


async def test_a_broken_endpoint_fails_its_notification_and_the_worker_keeps_delivering(
    clean_jetstream, settings_for, run_service, receiver
):
    """Once, an endpoint that made no URL killed the delivery worker and nothing after it was delivered."""
    import asyncpg

    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    settings = notify_settings(settings_for, receiver)
    app = create_app(settings)
    async with run_service(app):
        conn = await asyncpg.connect(settings.service_database_url())
        try:
            await conn.execute(
                "INSERT INTO public.recipient_endpoints (recipient_id, webhook_url) VALUES ($1, $2)",
                "dr-broken",
                "http://exa mple.org/\n/inbox",
            )
        finally:
            await conn.close()
        await publish_event(nc, referral_requested(new_patient_id(), physician="dr-broken"))
        (failed,) = await wait_for(lambda: _at_least(nc, NotificationFailed, 1))
        for n in range(3):
            await publish_event(nc, referral_requested(new_patient_id(), physician=f"dr-{n}"))
        # The broken physician's inbox message and every later referral's webhook and inbox message arrive.
        delivered = await wait_for(lambda: _at_least(nc, NotificationDelivered, 7), timeout_s=20)
    assert failed.data.recipient_id == "dr-broken" and failed.data.attempts == 1
    assert failed.data.reason.startswith("bad endpoint")
    assert len([d for d in delivered if d.data.recipient_id != "dr-broken"]) == 6
    assert all(h.healthy for h in app.runtime.task_health)
