"""Email to physicians on a real SMTP server (STARTTLS, then a login): one message per referral across a notify
restart, one reminder per escalation, no patient information, and refusals that reach the pharmacist's worklist."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import declare_as_owner
from support import actors
from support.events import new_patient_id, publish_event, referral_requested, review_task_completed
from support.jetstream import stream_messages, wait_for
from support.smtp import PASSWORD, USER, SmtpServer, serve_smtp

from mtm.contracts import (
    CommandReply,
    ListReferrals,
    NotificationDelivered,
    NotificationFailed,
    ReferralEscalated,
)
from mtm.contracts.events import ReferralEscalation
from mtm.contracts.subjects import LIST_REFERRALS, PATIENT_EVENTS_STREAM, event_filter
from mtm.notify.bootstrap import create_app
from mtm.notify.settings import NotifySettings
from mtm.platform.streams import PATIENT_EVENTS

pytestmark = pytest.mark.integration
WEB = "https://mtm.hospital.example"
PHYSICIAN = "prac-pcp-42"


@pytest.fixture
def smtp(tmp_path: Path):
    yield from serve_smtp(tmp_path)


def directory(tmp_path: Path, channels: list[str] | None = None) -> Path:
    path = tmp_path / "directory.json"
    entry: dict = {"practitioner_id": PHYSICIAN, "email": "lee@clinic.example"}
    if channels is not None:
        entry["channels"] = channels
    path.write_text(json.dumps({"practitioners": [entry]}))
    return path


def email_settings(settings_for, smtp: SmtpServer, tmp_path: Path, **overrides) -> NotifySettings:
    values = {
        "notify_smtp_host": "127.0.0.1",
        "notify_smtp_port": smtp.port,
        "notify_smtp_username": USER,
        "notify_smtp_password": PASSWORD,
        "notify_smtp_ca_file": str(smtp.ca_file),
        "notify_smtp_from": "mtm <mtm@hospital.example>",
        "notify_web_url": WEB,
        "notify_directory_file": str(directory(tmp_path)),
        "notify_poll_s": 0.05,
        "notify_backoff_base_s": 0.05,
    }
    values.update(overrides)
    return settings_for(NotifySettings, **values)


def links(smtp: SmtpServer) -> list[str]:
    return [
        line.strip()
        for received in smtp.messages()
        for line in received.message.get_content().splitlines()
        if line.strip().startswith(WEB)
    ]


async def test_one_email_per_referral_across_a_restart_with_tls_and_login_and_no_phi(
    clean_jetstream, settings_for, run_service, smtp, tmp_path
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    settings = email_settings(settings_for, smtp, tmp_path)
    first = referral_requested(new_patient_id(), physician=PHYSICIAN)
    second = referral_requested(new_patient_id(), physician=PHYSICIAN)
    async with run_service(create_app(settings)):
        await publish_event(nc, first)
        await wait_for(lambda: len(smtp.messages()) >= 1, timeout_s=20)
    # notify is down: the second referral waits on the log, the first is sent again by its producer.
    await publish_event(nc, second)
    await publish_event(nc, first)
    async with run_service(create_app(settings)):
        await wait_for(lambda: len(smtp.messages()) >= 2, timeout_s=20)
        await asyncio.sleep(1.0)  # anything sent twice would have arrived by now
    received = smtp.messages()
    assert sorted(links(smtp)) == sorted(f"{WEB}/referrals/{r.data.referral_id}" for r in (first, second))
    assert all(r.tls and r.login == USER and r.recipients == ["lee@clinic.example"] for r in received)
    assert smtp.logins and all(ok for _, ok in smtp.logins)
    for r, event in zip(received, (first, second), strict=True):
        text = r.message.as_string()
        # Minimum necessary: no patient id, no recommendation, no medication, no names.
        for phi in (event.patient_id, "atorvastatin", event.data.recommendation.text, event.data.pharmacist_id):
            assert phi.lower() not in text.lower()
        assert r.message["Subject"] == "A medication recommendation awaits your review"
    delivered = [
        NotificationDelivered.model_validate_json(m.data)
        for m in await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(NotificationDelivered))
    ]
    by_channel = sorted(d.data.channel for d in delivered)
    assert by_channel == ["email", "email", "nats", "nats"]
    message_ids = {r.message["Message-ID"] for r in received}
    assert message_ids == {f"<{d.data.notification_id}@mtm.notify>" for d in delivered if d.data.channel == "email"}


async def test_an_escalation_sends_one_reminder(clean_jetstream, settings_for, run_service, smtp, tmp_path):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    requested = referral_requested(new_patient_id(), physician=PHYSICIAN)
    now = datetime.now(UTC)
    escalated = requested.caused(
        ReferralEscalated,
        source="mtm/referral",
        event_id=uuid.uuid4(),
        data=ReferralEscalation(
            referral_id=requested.data.referral_id,
            task_id=requested.data.task_id,
            physician_id=PHYSICIAN,
            pharmacist_id="rph-1",
            escalation=1,
            respond_by=now,
            next_escalation_at=now + timedelta(days=2),
        ),
    )
    settings = email_settings(settings_for, smtp, tmp_path)
    async with run_service(create_app(settings)):
        await publish_event(nc, requested)
        await wait_for(lambda: len(smtp.messages()) >= 1, timeout_s=20)
        await publish_event(nc, escalated)
        await publish_event(nc, escalated)
        await wait_for(lambda: len(smtp.messages()) >= 2, timeout_s=20)
        await asyncio.sleep(0.5)
    subjects = [r.message["Subject"] for r in smtp.messages()]
    assert subjects == [
        "A medication recommendation awaits your review",
        "Reminder: a medication recommendation still awaits your review",
    ]
    assert len(set(links(smtp))) == 1


async def test_a_refused_login_fails_the_notification_and_the_pharmacist_sees_it(
    clean_jetstream, settings_for, run_service, smtp, tmp_path
):
    from mtm.referral.bootstrap import ReferralSettings
    from mtm.referral.bootstrap import create_app as referral_app

    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    settings = email_settings(settings_for, smtp, tmp_path, notify_smtp_password="not-the-password")
    completed = review_task_completed(new_patient_id(), physician=PHYSICIAN)
    async with run_service(referral_app(settings_for(ReferralSettings))), run_service(create_app(settings)):
        await publish_event(nc, completed)

        async def failed():
            found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(NotificationFailed))
            return [NotificationFailed.model_validate_json(m.data) for m in found]

        [failure] = await wait_for(failed, timeout_s=20)
        assert failure.data.channel == "email" and failure.data.detail == "SMTP 535" and failure.data.attempts == 1

        async def on_worklist():
            body = ListReferrals(needs_attention=True).model_dump_json().encode()
            reply = await nc.request(LIST_REFERRALS, body, timeout=10, headers=actors.pharmacist("rph-1"))
            found = CommandReply.model_validate_json(reply.data).data
            return found if found and found[0]["notification_failures"] else None

        [shown] = await wait_for(on_worklist, timeout_s=20)
    assert shown["notification_failures"][0]["channel"] == "email"
    assert shown["notification_failures"][0]["reason"] == "SMTP 535"
    assert smtp.messages() == [] and smtp.logins and not any(ok for _, ok in smtp.logins)
