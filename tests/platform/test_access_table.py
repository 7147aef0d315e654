"""The NATS access table agrees with the services: every event has one producer, every consumer its grant.

A service given less than it uses fails at run time (the secured stack refuses it, which the integration and
end-to-end tests would show); given more, it holds rights no one checks. These tests keep the table exact: a new
event, service, consumer, stream, request subject or page of the web app fails here until the table says who may
use it.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import mtm.contracts.subjects as subjects
from mtm.contracts import EVENTS, MedicationsReconciled, ReviewTaskCreated
from mtm.contracts.admin import SERVICES
from mtm.contracts.dead_letter import dead_letters_subject
from mtm.contracts.events import PatientErased
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_SUBJECT,
    ERASE_PATIENT,
    FILL_INTAKE_SUBJECT,
    PATIENT_KEYS,
    PATIENT_KEYS_MADE,
    event_filter,
    patient_subject,
)
from mtm.platform.access import ACCESS, ADMIN, Durable, nats_accounts, password_variable, subject_matches
from mtm.platform.runtime import ServiceRuntime

pytestmark = pytest.mark.unit
REPO_ROOT = Path(__file__).resolve().parents[2]


@cache
def runtime(service: str) -> ServiceRuntime:
    """The service as its process builds it (no connection is made)."""
    app: Any = importlib.import_module(f"mtm.{service}.bootstrap").create_app()
    return app.runtime


covers = subject_matches


def allowed(permissions: dict[str, Any], verb: str, subject: str) -> bool:
    return any(covers(pattern, subject) for pattern in permissions[verb]["allow"])


def test_the_subject_matcher_follows_nats_wildcards() -> None:
    assert covers("mtm.cmd.review.>", "mtm.cmd.review.claim.v1")
    assert not covers("mtm.cmd.review.>", "mtm.cmd.review")
    assert covers("mtm.patient.*.*.review_task_created.*", "mtm.patient.*.*.review_task_created.*")
    assert not covers("mtm.patient.*.*.review_task_created.*", "mtm.patient.>")
    assert not covers("mtm.admin.*.status.v1", "mtm.admin.review.rebuild.v1")


def test_every_event_has_exactly_one_producer() -> None:
    producers: dict[str, list[str]] = {}
    for grant in ACCESS.services:
        for cls in grant.publishes:
            producers.setdefault(cls.EVENT_NAME, []).append(grant.service)
    assert {cls.EVENT_NAME for cls in EVENTS.classes} == set(producers)
    assert {name: who for name, who in producers.items() if len(who) != 1} == {}


def test_every_service_has_a_grant_and_every_grant_a_service() -> None:
    assert sorted(g.service for g in ACCESS.services) == sorted(SERVICES)
    users = ACCESS.users()
    assert len(users) == len(set(users)) and ADMIN in users


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_is_granted_exactly_the_consumers_and_streams_it_keeps(service: str) -> None:
    built = runtime(service)
    grant = ACCESS.service(service)
    kept = {
        Durable(c.stream, c.durable, partitioned=bool(c.partitioned_by), retiring=c.retiring) for c in built.consumers
    }
    assert kept == set(grant.durables)
    assert set(built.definition.owned_streams) == set(grant.owns)
    assert grant.keeps_keys == built.definition.keeps_keys


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_answers_only_its_own_subjects_and_appends_only_its_own_events(service: str) -> None:
    built = runtime(service)
    handlers = built.definition.handlers
    grant = ACCESS.service(service)
    for command in handlers.commands:
        assert command.subject.startswith(f"mtm.cmd.{service}."), command.subject
        assert set(command.emits) <= set(grant.publishes)
    for query in handlers.queries:
        assert query.subject.startswith(f"mtm.query.{service}."), query.subject
    # Everything it subscribes to (commands, queries, status, rebuild; the keeper's keys and erasure) is granted.
    listened = [subscriber.subject.broker_address for subscriber in built.broker.subscribers]
    assert listened
    permissions = grant.permissions()
    assert [s for s in listened if not allowed(permissions, "subscribe", s)] == []


def test_only_the_key_keeper_answers_key_requests_and_only_services_and_the_web_app_send_them() -> None:
    """Patients' event keys open every sealed event: the web app asks for them to open what its live updates
    follow; the CLI and integrators may not ask, and no one but the keeper may listen."""
    keepers = [g.service for g in ACCESS.services if g.keeps_keys]
    assert keepers == ["reconciliation"]
    for grant in ACCESS.services:
        permissions = grant.permissions()
        assert allowed(permissions, "subscribe", PATIENT_KEYS) == grant.keeps_keys
        assert allowed(permissions, "publish", PATIENT_KEYS) != grant.keeps_keys
    assert [t.name for t in ACCESS.tools if allowed(t.permissions(), "publish", PATIENT_KEYS)] == ["web"]
    for tool in ACCESS.tools:
        assert not allowed(tool.permissions(), "subscribe", PATIENT_KEYS)
    for integrator in ACCESS.integrators:
        assert not allowed(integrator.permissions(), "publish", PATIENT_KEYS)
    # The keys the keeper announces: heard by the other services and the web app, announced by the keeper alone.
    for grant in ACCESS.services:
        permissions = grant.permissions()
        assert allowed(permissions, "subscribe", PATIENT_KEYS_MADE) != grant.keeps_keys
        assert allowed(permissions, "publish", PATIENT_KEYS_MADE) == grant.keeps_keys
    assert [t.name for t in ACCESS.tools if allowed(t.permissions(), "subscribe", PATIENT_KEYS_MADE)] == ["web"]
    for tool in ACCESS.tools:
        assert not allowed(tool.permissions(), "publish", PATIENT_KEYS_MADE)
    for integrator in ACCESS.integrators:
        assert not allowed(integrator.permissions(), "subscribe", PATIENT_KEYS_MADE)


def test_a_dead_letter_goes_back_only_where_its_service_may_publish() -> None:
    """Reconciliation sends parked intake messages back to its intakes; no service may append an event another
    decided, so a letter of one (review parked a reconciliation event) is not sent back by review."""
    reconciliation, review = ACCESS.service("reconciliation"), ACCESS.service("review")
    for subject in (DISCHARGE_INTAKE_SUBJECT, FILL_INTAKE_SUBJECT):
        assert reconciliation.may_publish(subject)
        assert not review.may_publish(subject)
    foreign = patient_subject("p1", MedicationsReconciled.EVENT_NAME)
    assert reconciliation.may_publish(foreign) and not review.may_publish(foreign)
    assert review.may_publish(patient_subject("p1", ReviewTaskCreated.EVENT_NAME))
    # Only the CLI sends an admin's dead-letter requests, and each service hears only its own.
    for service in SERVICES:
        subject = dead_letters_subject(service, "redrive")
        assert [t.name for t in ACCESS.tools if allowed(t.permissions(), "publish", subject)] == ["cli"]
        hearing = [g.service for g in ACCESS.services if allowed(g.permissions(), "subscribe", subject)]
        assert hearing == [service]


def test_only_the_cli_sends_an_erasure_and_only_the_key_keeper_receives_it() -> None:
    """`mtm erase` as an admin: the service checks the actor's role; NATS lets only the CLI's user send it."""
    senders = [t.name for t in ACCESS.tools if allowed(t.permissions(), "publish", ERASE_PATIENT)]
    assert senders == ["cli"]
    assert [g.service for g in ACCESS.services if allowed(g.permissions(), "publish", ERASE_PATIENT)] == []
    assert [g.service for g in ACCESS.services if allowed(g.permissions(), "subscribe", ERASE_PATIENT)] == [
        "reconciliation"
    ]


def _web_request_subjects() -> set[str]:
    """Every subject constant a module of the web app imports from `mtm.contracts.subjects`."""
    import mtm.web

    names: set[str] = set()
    for module in pkgutil.iter_modules(mtm.web.__path__):
        spec = importlib.util.find_spec(f"mtm.web.{module.name}")
        assert spec is not None and spec.origin is not None
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "mtm.contracts.subjects":
                names |= {alias.name for alias in node.names}
    values = {getattr(subjects, name) for name in names}
    return {value for value in values if isinstance(value, str) and value.startswith(("mtm.cmd.", "mtm.query."))}


def test_the_web_app_sends_only_what_its_pages_send_and_follows_only_what_it_shows() -> None:
    from mtm.web.live import WATCHED

    web = next(t for t in ACCESS.tools if t.name == "web")
    requests = _web_request_subjects()
    assert requests, "the web app sends commands and queries"
    # Besides its pages' requests, the keys its live updates open events with (`mtm.web.live`'s key source), those
    # the keeper announces, and erasures (heard by the live feed, which forgets the patient's key).
    live = (REPO_ROOT / "web" / "src" / "mtm" / "web" / "live.py").read_text()
    assert "nats_key_source" in live and "hear_keys" in live and "event_filter(PatientErased)" in live
    assert set(web.publish) == requests | {PATIENT_KEYS}
    assert set(web.subscribe) == {event_filter(cls) for cls in WATCHED} | {
        event_filter(PatientErased),
        PATIENT_KEYS_MADE,
    }


def test_integrators_are_accounts_of_their_own_that_import_only_their_intake() -> None:
    accounts = nats_accounts()
    for integrator in ACCESS.integrators:
        assert f"{integrator.account}: {{" in accounts
        assert integrator.permissions() == {
            "publish": {"allow": [integrator.intake]},
            "subscribe": {"allow": ["_INBOX.>"]},
        }
    assert {i.name: i.intake for i in ACCESS.integrators}["pharmacy"] == FILL_INTAKE_SUBJECT
    # Passwords are variables of the server's environment, never in the configuration.
    for user in ACCESS.users():
        assert f"password: ${password_variable(user)}\n" in accounts


def test_the_compose_deployments_nats_configuration_is_the_tables() -> None:
    from mtm.platform.access import compose_nats_config

    assert (REPO_ROOT / "deploy" / "nats" / "nats.conf").read_text() == compose_nats_config(), (
        "deploy/nats/nats.conf is stale: python -m mtm.platform.access deploy/nats/nats.conf"
    )
