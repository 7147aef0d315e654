"""Durable timers on real NATS and Postgres: a passed deadline fires once, also across a restart and a replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from conftest import declare_as_owner
from support.jetstream import stream_messages, wait_for

from mtm.contracts import EVENTS, EventEnvelope
from mtm.contracts.envelope import Frozen
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter, event_subject
from mtm.platform.projection import Projection, Tx, runs
from mtm.platform.runtime import ServiceDefinition, create_app
from mtm.platform.service import ServiceHandlers, on_event
from mtm.platform.settings import ServiceSettings
from mtm.platform.streams import PATIENT_EVENTS
from mtm.platform.timers import Timer

pytestmark = pytest.mark.integration
_NAMESPACE = uuid.UUID("0b8f4a52-6a58-4b3e-8f1f-4f3d8d2c0e11")


class Deadline(Frozen):
    item_id: uuid.UUID
    due: datetime


class DeadlineSet(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "test_deadline_set"
    type: Literal["mtm.test_deadline_set.v1"] = "mtm.test_deadline_set.v1"
    data: Deadline


class DeadlinePassed(EventEnvelope):
    EVENT_NAME: ClassVar[str] = "test_deadline_passed"
    type: Literal["mtm.test_deadline_passed.v1"] = "mtm.test_deadline_passed.v1"
    data: Deadline


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    for run in runs(events):
        if isinstance(run[0], DeadlineSet):
            await tx.conn.executemany(
                "INSERT INTO deadlines (item_id, patient_id, due) VALUES ($1, $2, $3)",
                [(e.data.item_id, e.patient_id, e.data.due) for e in run],
            )
        else:
            await tx.conn.executemany(
                "UPDATE deadlines SET passed_at = $2 WHERE item_id = $1", [(e.data.item_id, e.time) for e in run]
            )


async def due(conn, now: datetime, limit: int):
    return await conn.fetch(
        "SELECT item_id, patient_id, due FROM deadlines WHERE due <= $1 AND passed_at IS NULL LIMIT $2", now, limit
    )


def fire(row, now: datetime) -> list[DeadlinePassed]:
    deadline = Deadline(item_id=row["item_id"], due=row["due"])
    event_id = uuid.uuid5(_NAMESPACE, f"{row['item_id']}:{row['due'].isoformat()}")
    return [
        DeadlinePassed.create(source="test", patient_id=row["patient_id"], data=deadline, event_id=event_id, time=now)
    ]


class TimerSettings(ServiceSettings):
    service: str = "timers"


def service(settings: ServiceSettings, migrations: Path, fire=fire):
    registry = EVENTS.copy()
    registry.register(DeadlineSet)
    registry.register(DeadlinePassed)
    projection = Projection(
        migrations=migrations, tables=("deadlines",), handles=(DeadlineSet, DeadlinePassed), apply=apply
    )
    handlers = ServiceHandlers(
        projection=projection,
        reactions=(on_event(DeadlineSet, lambda e: [], durable="timers-set", keeps_input=True),),
        timers=(Timer(name="test-deadlines", every_s=0.05, due=due, fire=fire),),
    )
    return create_app(ServiceDefinition(name="timers", handlers=handlers, registry=registry), settings)


async def passed(nc) -> list[DeadlinePassed]:
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(DeadlinePassed))
    return [DeadlinePassed.model_validate_json(m.data) for m in found]


async def test_a_passed_deadline_fires_once_across_restarts_and_replicas(
    clean_jetstream, settings_for, run_service, tmp_path
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    (tmp_path / "001_deadlines.sql").write_text(
        "CREATE TABLE deadlines (item_id uuid PRIMARY KEY, patient_id text, due timestamptz, passed_at timestamptz);"
    )
    now = datetime.now(UTC)
    settings = settings_for(TimerSettings)
    js = nc.jetstream()
    soon = DeadlineSet.create(
        source="test", patient_id="p-soon", data=Deadline(item_id=uuid.uuid4(), due=now + timedelta(seconds=1))
    )
    later = DeadlineSet.create(
        source="test", patient_id="p-later", data=Deadline(item_id=uuid.uuid4(), due=now + timedelta(days=7))
    )
    for event in (soon, later):
        await js.publish(event_subject(event), event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)})

    async with run_service(service(settings, tmp_path)), run_service(service(settings, tmp_path)):
        fired = await wait_for(lambda: passed(nc), timeout_s=10)
        await asyncio.sleep(0.5)  # both replicas keep looking
    async with run_service(service(settings, tmp_path)):
        await asyncio.sleep(0.5)  # a restarted service looks again
    fired = await passed(nc)
    assert [e.data.item_id for e in fired] == [soon.data.item_id]
    assert fired[0].time >= soon.data.due


async def test_an_item_its_use_case_fails_on_stays_due_and_the_others_fire(
    clean_jetstream, settings_for, run_service, tmp_path
):
    """Regression: one item whose `fire` raised failed the whole round, every round: no deadline of anyone passed
    (the program's evaluation of every member would stop on one member it cannot evaluate)."""
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    (tmp_path / "001_deadlines.sql").write_text(
        "CREATE TABLE deadlines (item_id uuid PRIMARY KEY, patient_id text, due timestamptz, passed_at timestamptz);"
    )

    def fire_unless_poisoned(row, now: datetime) -> list[DeadlinePassed]:
        if row["patient_id"] == "p-poisoned":
            raise ValueError("a use case that cannot handle this item")
        return fire(row, now)

    now = datetime.now(UTC)
    js = nc.jetstream()
    deadlines = [
        DeadlineSet.create(source="test", patient_id=patient, data=Deadline(item_id=uuid.uuid4(), due=now))
        for patient in ("p-poisoned", "p-fine")
    ]
    for event in deadlines:
        await js.publish(event_subject(event), event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)})

    app = service(settings_for(TimerSettings), tmp_path, fire=fire_unless_poisoned)
    async with run_service(app):
        fired = await wait_for(lambda: passed(nc), timeout_s=10)
        await asyncio.sleep(0.3)  # more rounds: the poisoned item is looked at again, and still fails alone
        assert [e.patient_id for e in await passed(nc)] == ["p-fine"]
        assert not any(h.failures for h in app.runtime.task_health if h.name.startswith("timer-"))
    assert [e.data.item_id for e in fired] == [deadlines[1].data.item_id]
