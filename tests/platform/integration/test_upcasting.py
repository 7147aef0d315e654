"""An event stored as v1 stays v1 forever: a v2 reader gets it through the upcaster, live and on a rebuild.

The event and its projection are defined here, on the platform's real machinery (a durable consumer of the
patient log, the projection's tables and the rebuild), so the test shows the mechanism every service uses.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import asyncpg
import pytest
from conftest import declare_as_owner
from support.jetstream import wait_for

from mtm.contracts import EVENTS, EventEnvelope
from mtm.contracts.envelope import Frozen
from mtm.contracts.subjects import event_subject
from mtm.platform.projection import Projection, Tx
from mtm.platform.runtime import ServiceDefinition, create_app
from mtm.platform.service import ServiceHandlers, on_event
from mtm.platform.settings import ServiceSettings
from mtm.platform.streams import PATIENT_EVENTS

pytestmark = pytest.mark.integration


class NoteV1(Frozen):
    text: str


class NoteRecordedV1(EventEnvelope):
    """How the event was first written."""

    EVENT_NAME: ClassVar[str] = "test_note_recorded"
    type: Literal["mtm.test_note_recorded.v1"] = "mtm.test_note_recorded.v1"
    data: NoteV1


class NoteV2(Frozen):
    body: str  # renamed from `text`
    language: str  # added; v1 notes were all English


class NoteRecorded(EventEnvelope):
    """The current version: what readers are built against."""

    EVENT_NAME: ClassVar[str] = "test_note_recorded"
    type: Literal["mtm.test_note_recorded.v2"] = "mtm.test_note_recorded.v2"
    schema_version: Literal[2] = 2
    data: NoteV2


def upcast_v1_to_v2(event: dict) -> dict:
    return {**event, "data": {"body": event["data"]["text"], "language": "en"}}


class NotesSettings(ServiceSettings):
    service: str = "notes"


async def apply(tx: Tx, events: Sequence[EventEnvelope]) -> None:
    await tx.conn.executemany(
        "INSERT INTO notes (event_id, body, language, version_read) VALUES ($1, $2, $3, $4)",
        [(e.id, e.data.body, e.data.language, e.schema_version) for e in events],
    )


def notes_service(settings: ServiceSettings, migrations: Path):
    registry = EVENTS.copy()
    registry.register(NoteRecorded)
    registry.add_upcaster("test_note_recorded", 1, upcast_v1_to_v2)
    projection = Projection(migrations=migrations, tables=("notes",), handles=(NoteRecorded,), apply=apply)
    handlers = ServiceHandlers(
        projection=projection,
        # Nothing to decide: the reaction only keeps each note it reads (the live path of the projection).
        reactions=(on_event(NoteRecorded, lambda event: [], durable="notes-noted", keeps_input=True),),
    )
    return create_app(ServiceDefinition(name="notes", handlers=handlers, registry=registry), settings)


async def publish(nc, event: EventEnvelope) -> None:
    await nc.jetstream().publish(
        event_subject(event), event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
    )


async def rows(url: str) -> list[tuple]:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch("SELECT event_id, body, language, version_read FROM projection.notes ORDER BY body")
        return [tuple(r) for r in found]
    finally:
        await conn.close()


async def test_a_v1_event_reaches_a_v2_reader_live_and_on_rebuild(clean_jetstream, settings_for, run_service, tmp_path):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    (tmp_path / "001_notes.sql").write_text(
        "CREATE TABLE notes (event_id uuid PRIMARY KEY, body text, language text, version_read int);"
    )
    old = NoteRecordedV1.create(source="test", patient_id="p-upcast", data=NoteV1(text="Bring all pill bottles"))
    new = NoteRecorded.create(source="test", patient_id="p-upcast", data=NoteV2(body="Apporter", language="fr"))
    assert event_subject(old).endswith(".test_note_recorded.v1") and event_subject(new).endswith(".v2")
    settings = settings_for(NotesSettings)
    app = notes_service(settings, tmp_path)
    async with run_service(app):
        await publish(nc, old)
        await publish(nc, new)
        live = await wait_for(lambda: _at_least(settings.service_database_url(), 2))
        assert live == [
            (new.id, "Apporter", "fr", 2),
            (old.id, "Bring all pill bottles", "en", 2),  # stored as v1, read as v2
        ]
        result = await asyncio.wait_for(app.runtime.rebuilder().run(), timeout=60)
        assert result.applied == 2
        assert await rows(settings.service_database_url()) == live


async def _at_least(url: str, n: int):
    found = await rows(url)
    return found if len(found) >= n else None


def test_the_registry_refuses_what_it_cannot_read() -> None:
    from mtm.contracts import UnknownEvent

    registry = EVENTS.copy()
    registry.register(NoteRecorded)
    v1 = NoteRecordedV1.create(source="test", patient_id="p1", data=NoteV1(text="x")).model_dump_json()
    with pytest.raises(UnknownEvent, match="no upcaster from test_note_recorded v1 to v2"):
        registry.parse(v1, NoteRecorded)
    registry.add_upcaster("test_note_recorded", 1, upcast_v1_to_v2)
    assert registry.parse(v1, NoteRecorded).data == NoteV2(body="x", language="en")
    newer = NoteRecorded.create(source="t", patient_id="p1", data=NoteV2(body="x", language="en")).model_dump_json()
    with pytest.raises(UnknownEvent, match="newer than this reader"):
        registry.parse_any(newer.replace('"schema_version":2', '"schema_version":3'))
    assert uuid.UUID(str(registry.parse(v1, NoteRecorded).id))
