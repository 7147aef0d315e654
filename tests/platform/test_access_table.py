"""The NATS access table agrees with the services: every event has one producer, every consumer its grant.

A service given less than it uses fails at run time (the secured stack refuses it, which the integration and
end-to-end tests would show); given more, it holds rights no one checks. These tests keep the table exact: a new
event, service, consumer or stream fails here until the table says who may use it.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mtm.contracts import EVENTS
from mtm.contracts.admin import SERVICES
from mtm.platform.access import ACCESS, ADMIN, Durable, nats_accounts, password_variable
from mtm.platform.runtime import ServiceDefinition

pytestmark = pytest.mark.unit
REPO_ROOT = Path(__file__).resolve().parents[2]


@cache
def definition(service: str) -> ServiceDefinition:
    """The service as its process builds it (no connection is made)."""
    app: Any = importlib.import_module(f"mtm.{service}.bootstrap").create_app()
    return app.runtime.definition


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
    built = definition(service)
    grant = ACCESS.service(service)
    kept = {Durable(c.stream, c.durable, partitioned=bool(c.partitioned_by)) for c in built.consumers()}
    assert kept == set(grant.durables)
    assert {spec.name for spec in built.owned_streams} == set(grant.owns)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_answers_only_its_own_subjects_and_appends_only_its_own_events(service: str) -> None:
    handlers = definition(service).handlers
    grant = ACCESS.service(service)
    for command in handlers.commands:
        assert command.subject.startswith(f"mtm.cmd.{service}."), command.subject
        assert set(command.emits) <= set(grant.publishes)
    for query in handlers.queries:
        assert query.subject.startswith(f"mtm.query.{service}."), query.subject


def test_integrators_are_accounts_of_their_own_that_import_only_their_intake() -> None:
    accounts = nats_accounts()
    for integrator in ACCESS.integrators:
        assert f"{integrator.account}: {{" in accounts
        assert integrator.permissions() == {
            "publish": {"allow": [integrator.intake]},
            "subscribe": {"allow": ["_INBOX.>"]},
        }
    # Passwords are variables of the server's environment, never in the configuration.
    for user in ACCESS.users():
        assert f"password: ${password_variable(user)}\n" in accounts


def test_the_compose_deployments_nats_configuration_is_the_tables() -> None:
    from mtm.platform.access import compose_nats_config

    assert (REPO_ROOT / "deploy" / "nats" / "nats.conf").read_text() == compose_nats_config(), (
        "deploy/nats/nats.conf is stale: python -m mtm.platform.access deploy/nats/nats.conf"
    )
