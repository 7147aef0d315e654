"""Readiness over NATS: an instance says it is ready only once it pulls from its consumer groups, else why not."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import pytest
from conftest import declare_as_owner

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
