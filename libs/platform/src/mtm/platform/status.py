"""Readiness over NATS: each instance answers `GetServiceStatus` on its status subject; tools wait for every service."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from mtm.contracts.admin import SERVICES, GetServiceStatus, ServiceStatus, status_subject
from mtm.platform.connection import NatsClient

if TYPE_CHECKING:
    from faststream.nats import NatsBroker

    from mtm.platform.leases import GroupKey, GroupLeases

# (why this instance is not ready, the durables it is pulling from)
Readiness = tuple[tuple[str, ...], tuple[str, ...]]
# How long a status round waits for a service that has not answered yet, and then for its other instances.
ANSWER_WITHIN_S = 1.0
OTHER_INSTANCES_S = 0.05
POLL_EVERY_S = 0.2


def lease_readiness(
    leases: GroupLeases | None,
    keys: Iterable[GroupKey],
    loops: Mapping[GroupKey, tuple[asyncio.Task[None], Any]],
    durable: Callable[[GroupKey], str],
) -> Readiness:
    """Ready when this instance holds every consumer group it prefers and a pull loop runs for each group it holds.

    A preferred group that is not held means something else holds its lease (another replica that took it over,
    or a process left by an earlier run): this instance is then not consuming what it is meant to.
    """
    if leases is None:
        return ("starting: database, streams and consumers",), ()
    held = leases.held
    reasons: list[str] = []
    pulling: list[str] = []
    for key in keys:
        name = durable(key)
        if key in held:
            loop = loops.get(key)
            if loop is None or loop[0].done():
                reasons.append(f"{name}: group held but its pull loop is not running")
            else:
                pulling.append(name)
        elif leases.preferred(key):
            reasons.append(f"{name}: group not held (another process holds its lease, or it is being taken)")
    return tuple(reasons), tuple(pulling)


def answer_status(broker: NatsBroker, service: str, readiness: Callable[[], Readiness]) -> None:
    """Reply `ServiceStatus` on `status_subject(service)`; no queue group, so every instance of the service answers."""
    instance = f"{socket.gethostname()}:{os.getpid()}"
    started_at = datetime.now(UTC)

    async def on_status(_: Any) -> dict[str, Any]:
        reasons, consumers = readiness()
        status = ServiceStatus(
            service=service,
            instance=instance,
            ready=not reasons,
            reasons=reasons,
            consumers=consumers,
            started_at=started_at,
        )
        return status.model_dump(mode="json")

    on_status.__name__ = f"on_{service}_status"
    # The request body carries nothing to act on; an unreadable one still gets the status.
    broker.subscriber(status_subject(service), decoder=lambda message: message.body)(on_status)


async def service_statuses(nc: Client, services: Sequence[str] = SERVICES) -> dict[str, list[ServiceStatus]]:
    """One status round: every instance's answer, by service (an empty list: no instance answered)."""
    replies: dict[str, list[ServiceStatus]] = {service: [] for service in services}
    everyone = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        try:
            status = ServiceStatus.model_validate_json(msg.data)
        except ValidationError:
            return  # e.g. the server's no-responders notice
        if status.service in replies:
            replies[status.service].append(status)
            if all(replies.values()):
                everyone.set()

    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox, cb=on_reply)
    try:
        request = GetServiceStatus().model_dump_json().encode()
        for service in services:
            await nc.publish(status_subject(service), request, reply=inbox)
        await nc.flush()
        try:
            await asyncio.wait_for(everyone.wait(), ANSWER_WITHIN_S)
        except TimeoutError:
            pass
        await asyncio.sleep(OTHER_INSTANCES_S)
    finally:
        await subscription.unsubscribe()
    return replies


def not_ready(statuses: Mapping[str, list[ServiceStatus]]) -> dict[str, list[str]]:
    """Why each service that is not ready is not, from what its instances said (or that none answered)."""
    waiting: dict[str, list[str]] = {}
    for service, answers in statuses.items():
        if not answers:
            waiting[service] = [f"no instance answers on {status_subject(service)}"]
        elif not all(answer.ready for answer in answers):
            waiting[service] = [
                f"{answer.instance}: {reason}" for answer in answers if not answer.ready for reason in answer.reasons
            ]
    return waiting


async def wait_until_ready(
    nats_client: NatsClient | str,
    services: Sequence[str] = SERVICES,
    *,
    timeout_s: float = 120.0,
    check: Callable[[], None] | None = None,
) -> dict[str, list[ServiceStatus]]:
    """Until every instance of every service reports ready; TimeoutError names what each one said last.

    `nats_client` says how to connect (a bare URL: anonymously, for servers without users).

    `check` runs before each round (a caller's way to stop waiting, by raising, or to tend its processes).
    """
    client = nats_client if isinstance(nats_client, NatsClient) else NatsClient(url=nats_client)
    nc = await client.connect(connect_timeout=5)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if check is not None:
                check()
            statuses = await service_statuses(nc, services)
            waiting = not_ready(statuses)
            if not waiting:
                return statuses
            if time.monotonic() > deadline:
                said = "; ".join(f"{service}: {', '.join(reasons)}" for service, reasons in waiting.items())
                raise TimeoutError(f"services not ready after {timeout_s:.0f} s: {said}")
            await asyncio.sleep(POLL_EVERY_S)
    finally:
        await nc.drain()
