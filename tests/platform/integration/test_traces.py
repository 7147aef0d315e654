"""One discharge is one trace across the services, on real NATS and Postgres (in-memory span exporter).

The services run in this event loop, as in the rebuild test. A discharge arrives with the hospital's trace
context, a pharmacist claims and completes the review from a tool with a trace of its own, the referral reaches
the physician by webhook, email and inbox, and its deadline passes (a reminder). Every span of that discharge, in
reconciliation, review, referral and notify, is in the trace of its correlation id; the chain of parents runs
from the intake through the human commands to the notification; foreign contexts are links, not parents.
The same run checks that each service's log lines carry that service's name (not the last one created) and that
every event on the log is one its producer's AsyncAPI document says it publishes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support import actors
from support.events import new_patient_id
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge
from support.stack import request, service_apps

from mtm.contracts import (
    EVENTS,
    ClaimReviewTask,
    CompleteReviewTask,
    ListReviewTasks,
    NotificationDelivered,
    Recommendation,
    ReferralEscalated,
)
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    DISCHARGE_INTAKE_SUBJECT,
    LIST_REVIEW_TASKS,
    PATIENT_EVENTS_STREAM,
    event_filter,
)
from mtm.platform import tracing
from mtm.platform.asyncapi import service_document
from mtm.platform.crypto import KeyRing
from mtm.platform.keys import nats_key_source
from mtm.platform.logging import formatter
from mtm.platform.reading import EventReader

pytestmark = pytest.mark.integration
HOSPITAL_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TOOL_TRACE = "0af7651916cd43dd8448eb211c80319c"
ORDER = ("reconciliation", "review", "referral", "notify", "program")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(formatter("json"))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.install(tracing.provider("tests", [exporter], simple=True))
    try:
        yield exporter
    finally:
        tracing.install(None)


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


async def _events(nc, subject: str = ">") -> list:
    messages = await stream_messages(nc, PATIENT_EVENTS_STREAM, subject)
    reader = EventReader(EVENTS, KeyRing(nats_key_source(nc)))
    await reader.prepare((m.subject, m.data) for m in messages)
    return [(await reader.read(m.subject, m.data))[0] for m in messages]


def _discharged_now(discharge):
    """Discharged an hour ago: the review is not overdue yet (its deadline is days away)."""
    now = datetime.now(UTC)
    data = discharge.data.model_copy(
        update={"admitted_at": now - timedelta(days=3), "discharged_at": now - timedelta(hours=1)}
    )
    return discharge.model_copy(update={"data": data})


def _ancestors(span, by_id: dict) -> list:
    found = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        found.append(span)
    return found


async def test_one_discharge_is_one_trace_across_the_services(
    clean_jetstream, settings_for, run_service, receiver, smtp, tmp_path, spans, lines
):
    nc = clean_jetstream
    apps = service_apps(settings_for, receiver, smtp, tmp_path)
    patient = new_patient_id()
    discharge = _discharged_now(native_discharge(patient))
    async with (
        run_service(apps["reconciliation"]),
        run_service(apps["review"]),
        run_service(apps["referral"]),
        run_service(apps["notify"]),
        run_service(apps["program"]),
    ):
        hospital = f"00-{HOSPITAL_TRACE}-00f067aa0ba902b7-01"
        await nc.jetstream().publish(
            DISCHARGE_INTAKE_SUBJECT,
            discharge.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(discharge.id), "traceparent": hospital},
        )

        async def task():
            reply = await request(nc, LIST_REVIEW_TASKS, ListReviewTasks(patient_id=patient))
            return reply.data[0]["task_id"] if reply.ok and reply.data else None

        task_id = uuid.UUID(await wait_for(task, timeout_s=60))
        tool = {**actors.pharmacist("rph-trace"), "traceparent": f"00-{TOOL_TRACE}-b7ad6b7169203331-01"}
        assert (await request(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), tool)).ok
        recommendation = Recommendation(
            recommendation_id=uuid.uuid4(), text="Restart atorvastatin", needs_prescriber=True
        )
        completion = CompleteReviewTask(task_id=task_id, recommendations=(recommendation,))
        assert (await request(nc, COMPLETE_REVIEW_TASK, completion, tool)).ok

        async def delivered_and_reminded():
            done = await _events(nc, event_filter(NotificationDelivered))
            escalated = await _events(nc, event_filter(ReferralEscalated))
            # webhook, email and inbox, for the referral and then for its reminder (one escalation)
            return done if len(done) == 6 and escalated else None

        await wait_for(delivered_and_reminded, timeout_s=60)
        logged = list(lines.lines)
        documents = {name: service_document(app.runtime) for name, app in apps.items()}
        durables = {
            name: {c.durable for c in app.runtime.consumers} | {t.name for t in app.runtime.definition.handlers.timers}
            for name, app in apps.items()
        }
        on_log = await _events(nc)
        notify_metrics = apps["notify"].runtime.telemetry.metrics.render().decode()
        referral_metrics = apps["referral"].runtime.telemetry.metrics.render().decode()

    finished = spans.get_finished_spans()
    flow = tracing.flow_trace_id(discharge.correlation_id)
    trace = [s for s in finished if s.context.trace_id == flow]
    by_id = {s.context.span_id: s for s in trace}
    names = {s.name for s in trace}
    scopes = {s.instrumentation_scope.name for s in trace}
    assert {"mtm.reconciliation", "mtm.review", "mtm.referral", "mtm.notify"} <= scopes, scopes
    expected = {
        "consume reconciliation-discharge-intake",
        "apply reconciliation-discharge-intake",
        "publish transition_of_care_recorded",
        "publish medications_reconciled",
        "consume review-medications-reconciled",
        "drug check",
        "publish review_task_created",
        "publish review_task_claimed",
        "publish review_task_completed",
        "consume review-projection",
        "consume referral-review-task-completed",
        "publish referral_requested",
        "consume notify-referral-requested",
        "notification webhook",
        "notification email",
        "notification nats",
        "publish notification_delivered",
        "timer referral-escalation",
        "consume notify-referral-escalated",
    }
    assert expected <= names, sorted(expected - names)

    # The intake starts the flow: a root of its trace, the hospital's context a link.
    (intake,) = [s for s in trace if s.name == "consume reconciliation-discharge-intake"]
    assert intake.parent is None
    assert [format(link.context.trace_id, "032x") for link in intake.links] == [HOSPITAL_TRACE]
    # One chain of parents from the intake, through both of the pharmacist's commands, to the physician's
    # notification: every service's step is a descendant of the one before.
    (notified,) = [s for s in trace if s.name == "consume notify-referral-requested"]
    chain = [s.name for s in _ancestors(notified, by_id)]
    for step in (
        "publish referral_requested",
        "consume referral-review-task-completed",
        "publish review_task_completed",
        "publish review_task_claimed",
        "publish review_task_created",
        "consume review-medications-reconciled",
        "publish medications_reconciled",
        "consume reconciliation-discharge-intake",
    ):
        assert step in chain, (step, chain)
    # A command whose append met another service's event for the patient (read, then appended by someone else)
    # decides again: its first attempt stays in the trace as a failed span, and only one attempt appends.
    attempts = [s for s in trace if s.name == "publish review_task_completed"]
    (completed,) = [s for s in attempts if s.status.status_code is not StatusCode.ERROR]
    assert all(s.attributes["error.type"] == "ConcurrencyConflict" for s in attempts if s is not completed)
    assert [format(link.context.trace_id, "032x") for link in completed.links] == [TOOL_TRACE]
    (drug_check,) = [s for s in trace if s.name == "drug check"]
    assert by_id[drug_check.parent.span_id].name == "consume review-medications-reconciled"
    # The tool's requests are spans of the tool's trace, not of the flow's.
    requests = [s for s in finished if s.name == f"request {COMPLETE_REVIEW_TASK}"]
    assert [format(s.context.trace_id, "032x") for s in requests] == [TOOL_TRACE]
    # Ids only: nothing of the patient's record in any span.
    record = json.loads(discharge.model_dump_json())["data"]
    texts = {record["patient"]["birth_date"], patient, *(m["text"] for m in record["home_medications"])}
    for span in trace:
        values = " ".join(str(v) for v in span.attributes.values())
        assert not any(text in values for text in texts), (span.name, span.attributes)

    # The same flow in the services' metrics: each attempt by channel and outcome, the escalation by its timer.
    for channel in ("webhook", "email", "nats"):
        assert f'mtm_notification_attempts_total{{channel="{channel}",outcome="delivered"}} 2.0' in notify_metrics
    assert 'mtm_timer_events_total{timer="referral-escalation"} 1.0' in referral_metrics
    assert patient not in notify_metrics + referral_metrics

    # Each service logs under its own name, from every task it runs.
    started = [line["service"] for line in logged if line["event"] == "service started"]
    assert sorted(started) == sorted(ORDER)
    for line in logged:
        owner = next((name for name, known in durables.items() if line.get("consumer") in known), None)
        if owner is not None:
            assert line.get("service") == owner, line

    # Every event on the log is one its producer's document lists as sent (`mtm/<service>`; an intake keeps the
    # sender's own source, and is recorded by whichever service's document says so).
    def sent_by(service: str) -> set[str]:
        document = documents[service]
        return {
            document["channels"][op["channel"]["$ref"].rsplit("/", 1)[-1]]["address"]
            for op in document["operations"].values()
            if op["action"] == "send"
        }

    assert {type(e).__name__ for e in on_log} >= {
        "TransitionOfCareRecorded",
        "ReviewTaskCompleted",
        "ReferralEscalated",
    }
    for event in on_log:
        address = f"mtm.patient.{{partition}}.{{patient}}.{type(event).EVENT_NAME}.v{event.version()}"
        producers = [event.source.split("/")[1]] if event.source.startswith("mtm/") else list(documents)
        assert any(address in sent_by(p) for p in producers), (event.source, type(event).__name__)
