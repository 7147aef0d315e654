"""A service's /healthz, /readyz and /metrics over HTTP, on real NATS and Postgres; the web app's too."""

from __future__ import annotations

import httpx
import pytest
from conftest import declare_as_owner
from prometheus_client.parser import text_string_to_metric_families
from support import actors
from support.events import medications_reconciled, new_patient_id, publish_event
from support.jetstream import stream_messages, wait_for
from support.web import running_web, web_settings

from mtm.contracts import CommandReply, ListReviewTasks, ReviewTaskCreated
from mtm.contracts.subjects import LIST_REVIEW_TASKS, PATIENT_EVENTS_STREAM, event_filter, event_subject
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review.bootstrap import create_app
from mtm.review.settings import ReviewSettings

pytestmark = pytest.mark.integration
CONSUMER = "review-medications-reconciled"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`(sample name, sorted labels)` → value, as Prometheus would read the page."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_a_service_serves_health_readiness_and_metrics(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    app = create_app(settings_for(ReviewSettings, http_port=0))
    patients = [new_patient_id() for _ in range(3)]
    async with run_service(app), httpx.AsyncClient(timeout=10) as http:
        url = app.runtime.telemetry.address
        assert (await http.get(f"{url}/healthz")).json() == {"status": "ok"}

        async def ready():
            answer = await http.get(f"{url}/readyz")
            return answer.json() if answer.status_code == 200 else None

        readiness = await wait_for(ready, timeout_s=30)
        assert readiness["service"] == "review" and CONSUMER in readiness["consumers"]

        for patient in patients:
            await publish_event(nc, medications_reconciled(patient))
        # One message no reader can take: parked on the dead-letter stream with its reason.
        bad_subject = event_subject(medications_reconciled(new_patient_id()))
        await nc.jetstream().publish(bad_subject, b"{not json")

        async def created():
            found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
            return found if len(found) == len(patients) else None

        await wait_for(created, timeout_s=30)
        reply = await nc.request(
            LIST_REVIEW_TASKS, ListReviewTasks().model_dump_json().encode(), timeout=5, headers=actors.ADMIN
        )
        assert CommandReply.model_validate_json(reply.data).ok
        refused = await nc.request(LIST_REVIEW_TASKS, ListReviewTasks().model_dump_json().encode(), timeout=5)
        assert CommandReply.model_validate_json(refused.data).outcome == "unauthorized"

        async def metrics_after_the_flow():
            answer = await http.get(f"{url}/metrics")
            assert answer.headers["content-type"].startswith("text/plain")
            found = samples(answer.text)
            done = value(found, "mtm_messages_dead_lettered_total", consumer=CONSUMER) >= 1 and value(
                found, "mtm_outbox_published_total"
            ) >= len(patients)
            return (found, answer.text) if done else None

        found, text = await wait_for(metrics_after_the_flow, timeout_s=30)

    assert value(found, "mtm_messages_consumed_total", consumer=CONSUMER) == len(patients) + 1
    assert value(found, "mtm_messages_acked_total", consumer=CONSUMER) == len(patients) + 1
    assert value(found, "mtm_messages_applied_total", consumer=CONSUMER) == len(patients)
    assert value(found, "mtm_messages_nakd_total", consumer=CONSUMER) == 0
    assert value(found, "mtm_batch_size_sum", consumer=CONSUMER) == len(patients) + 1
    assert value(found, "mtm_batch_duration_seconds_count", consumer=CONSUMER) >= 1
    assert value(found, "mtm_drug_check_duration_seconds_count") == len(patients)
    assert value(found, "mtm_requests_total", subject=LIST_REVIEW_TASKS, outcome="accepted") == 1
    assert value(found, "mtm_requests_total", subject=LIST_REVIEW_TASKS, outcome="unauthorized") == 1
    assert ("mtm_outbox_depth", ()) in found and ("mtm_outbox_lag_seconds", ()) in found
    assert ("mtm_consumer_pending_messages", (("consumer", CONSUMER), ("durable", CONSUMER))) in found
    assert value(found, "mtm_ready") == 1
    # Labels name consumers, subjects and outcomes: never a patient.
    assert not any(patient in text for patient in patients)


async def test_probe_server_answers_only_what_it_serves(clean_jetstream, settings_for, run_service):
    await declare_as_owner(clean_jetstream, PATIENT_EVENTS)
    app = create_app(settings_for(ReviewSettings, http_port=0))
    async with run_service(app), httpx.AsyncClient(timeout=10) as http:
        url = app.runtime.telemetry.address
        assert (await http.get(f"{url}/nothing")).status_code == 404
        assert (await http.post(f"{url}/metrics")).status_code == 405
        assert (await http.get(f"{url}/healthz?probe=1")).status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as http:
            await http.get(f"{url}/healthz")


async def test_the_web_app_serves_its_probes_apart_from_its_pages(infra, clean_jetstream):
    async with running_web(web_settings(infra, http_port=0)) as web, httpx.AsyncClient(timeout=10) as http:
        probes = web.app.state.web.probes
        assert (await http.get(f"{probes.address}/healthz")).status_code == 200
        ready = await http.get(f"{probes.address}/readyz")
        assert ready.status_code == 200 and ready.json()["service"] == "web", ready.text
        assert (await http.get(f"{web.url}/login")).status_code == 200
        found = samples((await http.get(f"{probes.address}/metrics")).text)
        assert value(found, "mtm_web_requests_total", route="/login", method="GET", status="200") == 1
        assert (await http.get(f"{web.url}/metrics")).status_code == 404  # not on the public listener
