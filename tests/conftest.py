"""Shared fixtures: real NATS JetStream and Postgres (environment → testcontainers → embedded) and services."""

from __future__ import annotations

import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from support import actors

from mtm.devstack.infra import Infrastructure, resolve_infrastructure
from mtm.platform.access import ACCESS, ADMIN
from mtm.platform.settings import ServiceSettings
from mtm.platform.streams import StreamSpec, declare_stream

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_KEK = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infrastructure]:
    resolved = resolve_infrastructure(tmp_path_factory.mktemp("infra"))
    yield resolved
    resolved.stop()


@pytest.fixture
async def nc(infra: Infrastructure) -> AsyncIterator[Client]:
    """The tests' own connection, as the admin: they stand in for every producer and operator at once."""
    client = await infra.nats_client().connect()
    yield client
    await client.drain()


@pytest.fixture
async def clean_jetstream(nc: Client) -> Client:
    """Each test starts with no streams, so durable consumers and logs of earlier tests cannot interfere."""
    js = nc.jetstream()
    for info in await js.streams_info():
        await js.delete_stream(info.config.name)
    return nc


@pytest.fixture
def settings_for(infra: Infrastructure) -> Callable[..., Any]:
    """Settings of a service on the test infrastructure with a database of its own, tuned for quick tests.

    The service connects as its own NATS user and its own Postgres role (owner of its test databases only), as
    it does in `mtm up`; `on=` puts it on other servers (a test's private ones). A service the access table does
    not know (a test's own, to show a platform mechanism) connects to NATS as the admin.
    """
    run = uuid.uuid4().hex[:8]

    def make(cls: type[ServiceSettings], on: Infrastructure | None = None, **overrides: Any) -> Any:
        servers = on or infra
        service = cls.model_fields["service"].default
        database = f"t_{service}_{run}"
        user = service if service in ACCESS.users() else ADMIN
        values: dict[str, Any] = {
            **servers.nats_settings(user),
            "database_url": servers.service_database(service, database),
            "database_name": database,
            "fetch_timeout_s": 0.01,
            "outbox_poll_s": 0.1,
            "max_deliver": 3,
            "ack_wait_s": 5.0,
            "startup_timeout_s": 10.0,
            "log_format": "console",
            "actor_public_keys": actors.PUBLIC_KEY,
            "key_encryption_key": TEST_KEK,
            # One service alone has no key keeper to ask; tests running reconciliation with others seal.
            "seal_events": False,
        }
        values.update(overrides)
        return cls(**values)

    return make


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """Start a FastStream service app in this event loop and stop it cleanly afterwards."""
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
def run_service() -> Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]:
    return running


async def declare_as_owner(nc: Client, *specs: StreamSpec) -> None:
    """Declare streams the way their owning service does, for tests that run only a consumer."""
    js = nc.jetstream()
    defaults = ServiceSettings.model_fields
    window = defaults["duplicate_window_s"].default
    max_age = {
        "forever": 0.0,
        "intake": defaults["intake_max_age_s"].default,
        "dead-letters": defaults["dead_letter_max_age_s"].default,
    }
    for spec in specs:
        # As the owner does by default: a service bound to it later finds nothing to change.
        await declare_stream(js, spec, replicas=1, duplicate_window_s=window, max_age_s=max_age[spec.kept_for])


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A real HTTP server that records webhook posts (tests may script its answers)."""
    from support.webhook import WebhookReceiver, serve

    yield from serve(WebhookReceiver())


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Any]:
    """A real SMTP server (STARTTLS, a login) that keeps what it received."""
    from support.smtp import serve_smtp

    yield from serve_smtp(tmp_path)


os.environ.setdefault("MTM_LOG_FORMAT", "console")
