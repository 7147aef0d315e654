"""Readiness over NATS: an instance says it is ready only once it pulls from its consumer groups, else why not."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest
from conftest import declare_as_owner
from support.jetstream import wait_for

from mtm.contracts.admin import status_subject
from mtm.platform.db import ensure_database
from mtm.platform.leases import GroupKey
from mtm.platform.status import service_statuses, wait_until_ready
from mtm.platform.streams import PATIENT_EVENTS
from mtm.referral.bootstrap import ReferralSettings, create_app

pytestmark = pytest.mark.integration
DURABLE = "referral-review-task-completed"
PROJECTION = "referral-projection"
FAILURES = "referral-notification-failed"


async def test_an_instance_is_ready_only_while_it_pulls_from_the_groups_it_should_hold(
    clean_jetstream, infra, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    settings = settings_for(ReferralSettings)
    assert await service_statuses(nc, ["referral"]) == {"referral": []}
    with pytest.raises(TimeoutError, match=re.escape(f"no instance answers on {status_subject('referral')}")):
        await wait_until_ready(infra.nats_client("cli"), ["referral"], timeout_s=0.5)

    # A process left by an earlier run still holds the group's lease: the new instance runs but consumes nothing.
    await ensure_database(settings.service_database_url())
    leftover = await asyncpg.connect(settings.service_database_url())
    await leftover.execute("SELECT pg_advisory_lock($1::int, $2::int)", *GroupKey(DURABLE, 0, 1).lock)
    try:
        async with run_service(create_app(settings)):
            [status] = (await service_statuses(nc, ["referral"]))["referral"]
            assert not status.ready and DURABLE not in status.consumers
            assert status.service == "referral" and status.reasons
            with pytest.raises(TimeoutError, match=f"{DURABLE}: group not held"):
                await wait_until_ready(infra.nats_client("cli"), ["referral"], timeout_s=1)

            await leftover.close()
            ready = await wait_until_ready(infra.nats_client("cli"), ["referral"], timeout_s=30)
            [status] = ready["referral"]
            assert status.ready and set(status.consumers) == {DURABLE, FAILURES, PROJECTION} and status.reasons == ()
    finally:
        await leftover.close()
    assert await service_statuses(nc, ["referral"]) == {"referral": []}


async def test_a_service_and_its_readiness_take_every_seed_of_a_cluster_url(
    clean_jetstream, infra, settings_for, run_service
):
    """Regression: `MTM_NATS_URL` with several seeds (as the README says for a cluster) was passed to the client
    as one URL, and the service could not start. A seed that is down is skipped for the next."""
    await declare_as_owner(clean_jetstream, PATIENT_EVENTS)
    down = "nats://127.0.0.1:1"
    seeds = f"{down}, {infra.nats_url}"
    cli = infra.nats_client("cli")
    async with run_service(create_app(settings_for(ReferralSettings, nats_url=seeds))):
        ready = await wait_until_ready(cli.model_copy(update={"url": seeds}), ["referral"], timeout_s=30)
    assert [status.ready for status in ready["referral"]] == [True]


async def test_a_background_task_that_keeps_failing_makes_its_instance_not_ready_until_it_recovers(
    clean_jetstream, infra, settings_for, run_service, monkeypatch
):
    """A supervised task is restarted after each failure; one that keeps failing (here the outbox relay) is reported
    by name instead of the instance running half dead, and a good round makes it ready again."""
    from mtm.platform.outbox import OutboxRelay

    await declare_as_owner(clean_jetstream, PATIENT_EVENTS)
    broken = True
    relay_once = OutboxRelay.relay_once

    async def failing(self: OutboxRelay) -> int:
        if broken:
            raise RuntimeError("relay broken")
        return await relay_once(self)

    monkeypatch.setattr(OutboxRelay, "relay_once", failing)
    async with run_service(create_app(settings_for(ReferralSettings))):

        async def failing_reported() -> bool:
            [status] = (await service_statuses(clean_jetstream, ["referral"]))["referral"]
            return not status.ready and any(r.startswith("outbox-relay: failing") for r in status.reasons)

        await wait_for(failing_reported, timeout_s=30)
        with pytest.raises(TimeoutError, match=r"outbox-relay: failing \(RuntimeError, \d+ times in a row\)"):
            await wait_until_ready(infra.nats_client("cli"), ["referral"], timeout_s=1)
        broken = False
        [status] = (await wait_until_ready(infra.nats_client("cli"), ["referral"], timeout_s=60))["referral"]
    assert status.ready and status.reasons == ()


async def test_replicas_starting_together_each_find_their_database(infra):
    """Replicas start at once and each creates the service's database if missing: none of them may fail on it."""
    from mtm.platform.settings import with_database

    name = f"t_together_{uuid.uuid4().hex[:8]}"
    url = with_database(infra.database_url, name)
    await asyncio.gather(*(ensure_database(url) for _ in range(8)))
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()
        admin = await asyncpg.connect(with_database(infra.database_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE "{name}"')
        finally:
            await admin.close()
