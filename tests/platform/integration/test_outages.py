"""Outages are not poison: Postgres stopped and NATS restarted under load lose, double and dead-letter nothing.

The service runs on servers of its own (the shared test servers keep running for the other tests), receives
discharges while Postgres is stopped and while NATS restarts, and must afterwards have reconciled every one
exactly once, parked none, left nothing in its outbox, and still report ready. `make faults` runs the long
version of this (several services, kills, a cluster).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge

from mtm.contracts import MedicationsReconciled
from mtm.contracts.subjects import DISCHARGE_INTAKE_SUBJECT, PATIENT_EVENTS_STREAM, dead_letter_stream, event_filter
from mtm.devstack.infra import Infrastructure, resolve_infrastructure
from mtm.platform.status import wait_until_ready

pytestmark = pytest.mark.integration


@pytest.fixture
async def private_servers(tmp_path: Path) -> AsyncIterator[Infrastructure]:
    """Secured embedded servers of the test's own, to stop and start (the shared ones serve the other tests)."""
    # Not from the environment: these are the servers this test takes down.
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MTM_NATS_URL", raising=False)
        env.delenv("MTM_DATABASE_URL", raising=False)
        servers = await asyncio.to_thread(resolve_infrastructure, tmp_path, use_containers=False)
    try:
        yield servers
    finally:
        await asyncio.to_thread(servers.stop)


async def test_postgres_and_nats_outages_lose_double_and_park_nothing(private_servers, settings_for, run_service):
    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    nats_server, postgres = private_servers.nats_server, private_servers.postgres
    assert nats_server is not None and postgres is not None
    settings = settings_for(ReconciliationSettings, on=private_servers, max_deliver=2, ack_wait_s=2.0)
    sent: list[str] = []
    nc = await private_servers.nats_client().connect(max_reconnect_attempts=-1, reconnect_time_wait=0.2)

    async def discharge(n: int) -> None:
        for _ in range(n):
            event = native_discharge(f"outage-{len(sent)}")
            while True:
                try:
                    await nc.jetstream().publish(
                        DISCHARGE_INTAKE_SUBJECT,
                        event.model_dump_json().encode(),
                        timeout=2,
                        headers={"Nats-Msg-Id": str(event.id)},
                    )
                    break
                except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError, TimeoutError):
                    await asyncio.sleep(0.2)  # the hospital's side retries while NATS restarts
            sent.append(event.patient_id)

    app = create_app(settings)
    try:
        async with run_service(app):
            await discharge(20)
            await asyncio.to_thread(postgres.stop)  # the database goes away with work in hand
            await discharge(20)
            await asyncio.sleep(3.0)  # longer than max_deliver times ack_wait: an outage must not count
            await asyncio.to_thread(postgres.start)
            await discharge(20)
            await asyncio.to_thread(nats_server.stop)  # and then the broker restarts
            await asyncio.sleep(1.0)
            await asyncio.to_thread(nats_server.start)
            await discharge(20)
            results = await wait_for(lambda: _reconciled(nc, len(sent)), timeout_s=90)
            await wait_for(lambda: _outbox_empty(settings), timeout_s=30)
            await wait_until_ready(private_servers.nats_client("cli"), ["reconciliation"], timeout_s=30)
            parked = await stream_messages(nc, dead_letter_stream("reconciliation"))
            waited = sum(p.waited_out for p in app.runtime.processors.values())
    finally:
        await nc.close()
    counts = Counter(e.patient_id for e in results)
    assert set(counts) == set(sent) and set(counts.values()) == {1}, "lost or doubled"
    assert parked == [], [m.data[:200] for m in parked]
    assert waited > 0, "the outage should have been waited out in place"


async def _reconciled(nc, n: int) -> list[MedicationsReconciled] | None:
    try:
        found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(MedicationsReconciled))
    except Exception:
        return None
    events = [MedicationsReconciled.model_validate_json(m.data) for m in found]
    return events if len({e.patient_id for e in events}) >= n else None


async def _outbox_empty(settings) -> bool:
    import asyncpg

    conn = await asyncpg.connect(settings.service_database_url())
    try:
        return not await conn.fetchval("SELECT count(*) FROM public.outbox")
    finally:
        await conn.close()


async def test_a_replica_that_loses_its_lease_session_stops_consuming_then_takes_its_groups_again(
    clean_jetstream, settings_for, run_service
):
    import asyncpg

    from mtm.reconciliation.bootstrap import ReconciliationSettings, create_app

    settings = settings_for(ReconciliationSettings)
    app = create_app(settings)
    async with run_service(app):
        leases = app.runtime.leases
        assert leases.held
        conn = await asyncpg.connect(settings.service_database_url())
        try:
            # What a network partition or a failover does to the session that holds the advisory locks.
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                "mtm-reconciliation-leases",
            )
        finally:
            await conn.close()
        assert killed == 1
        await wait_for(lambda: leases.sessions_lost >= 1, timeout_s=10)
        await wait_for(lambda: len(leases.held) == len(app.runtime.group_keys), timeout_s=10)
        assert all(not task.done() for task, _ in app.runtime.pull_loops.values())
