"""The services in one test's event loop, on real NATS, Postgres, SMTP and HTTP, and what tests ask of them."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from mtm.contracts import CommandReply
from mtm.contracts.admin import RebuildProgress, RebuildProjection, rebuild_progress_subject, rebuild_subject
from mtm.contracts.subjects import DISCHARGE_INTAKE_STREAM, FILL_INTAKE_STREAM, PATIENT_EVENTS_STREAM
from support import actors
from support.smtp import PASSWORD, USER, SmtpServer
from support.webhook import WebhookReceiver

SECRET = "stack-test-secret"
DEDUP_WINDOW_S = 2.0
"""The patient log's deduplication window in these tests: short, so a test can outlast it."""


def email_settings(smtp: SmtpServer, folder: Path) -> dict:
    """notify's email channel on the test's SMTP server, for the demo patients' primary-care physician."""
    directory = folder / "directory.json"
    directory.write_text(json.dumps({"practitioners": [{"practitioner_id": "prac-pcp-42", "email": "lee@x.example"}]}))
    return {
        "notify_smtp_host": "127.0.0.1",
        "notify_smtp_port": smtp.port,
        "notify_smtp_username": USER,
        "notify_smtp_password": PASSWORD,
        "notify_smtp_ca_file": str(smtp.ca_file),
        "notify_web_url": "https://mtm.example",
        "notify_directory_file": str(directory),
    }


def service_apps(settings_for, receiver: WebhookReceiver, smtp: SmtpServer, folder: Path, **common) -> dict:
    """The five services; events sealed as in production (reconciliation keeps the keys, the others ask it)."""
    from mtm.notify.bootstrap import create_app as notify_app
    from mtm.notify.settings import NotifySettings
    from mtm.program.bootstrap import create_app as program_app
    from mtm.program.settings import ProgramSettings
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app
    from mtm.referral.bootstrap import ReferralSettings
    from mtm.referral.bootstrap import create_app as referral_app
    from mtm.review.bootstrap import create_app as review_app
    from mtm.review.settings import ReviewSettings

    common = {"seal_events": True, **common}
    return {
        # The owner of the patient log declares it with a short deduplication window, so a test can outlast it.
        "reconciliation": reconciliation_app(
            settings_for(ReconciliationSettings, duplicate_window_s=DEDUP_WINDOW_S, **common)
        ),
        "review": review_app(settings_for(ReviewSettings, review_timer_every_s=0.1, **common)),
        # Unanswered referrals escalate once, a second after they are requested (a reminder goes out).
        "referral": referral_app(
            settings_for(
                ReferralSettings,
                referral_respond_within_s=1.0,
                referral_max_escalations=1,
                referral_escalation_check_s=0.1,
                **common,
            )
        ),
        "notify": notify_app(
            settings_for(
                NotifySettings,
                notify_webhook_url=receiver.url,
                notify_webhook_secret=SECRET,
                notify_backoff_base_s=0.05,
                notify_poll_s=0.05,
                **email_settings(smtp, folder),
                **common,
            )
        ),
        "program": program_app(settings_for(ProgramSettings, program_evaluation_every_s=0.1, **common)),
    }


async def request(nc, subject: str, body, headers: dict[str, str] = actors.ADMIN) -> CommandReply:
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def dump(app) -> dict[str, list[str]]:
    """Every row of every table of the service's projection, `applied_events` included, in a stable order."""
    runtime = app.runtime
    tables = (*runtime.definition.handlers.projection.tables, "applied_events")
    conn = await asyncpg.connect(runtime.database_url)
    try:
        # A claim's position is the order this database claimed in (live, decisions before they reached the log),
        # not part of what the log says: the ids are compared.
        columns = {"applied_events": "event_id::text"}
        return {
            table: sorted(
                row[0]
                for row in await conn.fetch(
                    f"SELECT {columns.get(table, 'row_to_json(t)::text')} FROM projection.{table} t"
                )
            )
            for table in tables
        }
    finally:
        await conn.close()


@dataclass(frozen=True)
class NotYet:
    """A falsy answer to a wait that says what is still moving: a wait that fails shows it."""

    reason: str

    def __bool__(self) -> bool:
        return False


async def settled(apps: dict, nc) -> bool | NotYet:
    """Nothing left to consume or send, no notification pending, no escalation due: the tables stay as they are."""
    js = nc.jetstream()
    for stream in (DISCHARGE_INTAKE_STREAM, FILL_INTAKE_STREAM, PATIENT_EVENTS_STREAM):
        for consumer in await js.consumers_info(stream):
            durable = consumer.config.durable_name
            if durable is not None and (consumer.num_pending or consumer.num_ack_pending):
                return NotYet(f"{durable}: {consumer.num_pending} pending, {consumer.num_ack_pending} unacknowledged")
    for app in apps.values():
        name = app.runtime.name
        conn = await asyncpg.connect(app.runtime.database_url)
        try:
            for what, query in (("outbox rows", "SELECT count(*) FROM public.outbox"), *_STILL_MOVING.get(name, ())):
                if count := await conn.fetchval(query):
                    return NotYet(f"{name}: {count} {what}")
        finally:
            await conn.close()
    return True


# Deadlines passed that review's timers have not marked yet: until they have, its tables still move on their own.
REVIEW_DEADLINES_PENDING = """
SELECT (SELECT count(*) FROM projection.review_tasks
        WHERE status <> 'completed' AND overdue_at IS NULL AND due <= now())
     + (SELECT count(*) FROM projection.review_schedule WHERE handled_at IS NULL AND opens_at <= now())
     + (SELECT count(*) FROM projection.action_plans
        WHERE delivered_on IS NULL AND overdue_at IS NULL AND due <= now())
"""
# What each service still moves on its own, as (what, count query).
_STILL_MOVING: dict[str, tuple[tuple[str, str], ...]] = {
    "notify": (("notifications pending", "SELECT count(*) FROM projection.notifications WHERE status = 'pending'"),),
    "review": (("deadlines passed and not marked", REVIEW_DEADLINES_PENDING),),
    "program": (
        (
            "members with inputs not evaluated",
            "SELECT count(*) FROM projection.members WHERE inputs_seen > inputs_evaluated",
        ),
    ),
    "referral": (
        (
            "referrals due to escalate",
            "SELECT count(*) FROM projection.referrals WHERE status = 'requested' AND escalate_at IS NOT NULL",
        ),
    ),
}


async def dead_letter_reasons(nc) -> list[str]:
    """Why each message the services parked was parked (reasons carry no PHI): what a failed wait should show."""
    from mtm.contracts import DeadLetter
    from mtm.contracts.admin import SERVICES
    from mtm.contracts.subjects import DEAD_LETTER_PREFIX, dead_letter_stream
    from support.jetstream import stream_messages

    reasons = []
    for service in SERVICES:
        try:
            # Letters only (`mtm.dlq.<service>.<consumer>`): a redrive's record has a fifth token.
            letters = await stream_messages(nc, dead_letter_stream(service), f"{DEAD_LETTER_PREFIX}.{service}.*")
        except Exception:  # the stream may not exist yet
            continue
        for letter in letters:
            parked = DeadLetter.model_validate_json(letter.data)
            reasons.append(f"{service}/{parked.consumer}: {parked.reason}")
    return reasons


async def quiet(apps: dict, nc) -> bool | NotYet:
    """Settled, and still settled a moment later (an event relayed between two looks would otherwise slip by)."""
    if not (found := await settled(apps, nc)):
        return found
    await asyncio.sleep(0.3)
    return await settled(apps, nc)


async def rebuild(nc, service: str) -> RebuildProgress:
    """`mtm rebuild SERVICE` as an admin sends it: the request, then its progress until the swap (or failure)."""
    command = RebuildProjection()
    progress: asyncio.Queue[RebuildProgress] = asyncio.Queue()

    async def on_progress(msg) -> None:
        await progress.put(RebuildProgress.model_validate_json(msg.data))

    sub = await nc.subscribe(rebuild_progress_subject(service, command.rebuild_id), cb=on_progress)
    try:
        assert (await request(nc, rebuild_subject(service), command)).ok
        while True:
            report = await asyncio.wait_for(progress.get(), timeout=60)
            if report.phase in ("swapped", "failed"):
                return report
    finally:
        await sub.unsubscribe()


async def messages_in_log(nc) -> int:
    return (await nc.jetstream().stream_info(PATIENT_EVENTS_STREAM)).state.messages
