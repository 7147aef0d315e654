"""Builders of contract events for tests, and publishing them the way a producer does."""

from __future__ import annotations

import uuid

from nats.aio.client import Client
from nats.js.api import PubAck

from mtm.contracts import CareTeam, EventEnvelope, Recommendation, ReviewTaskCompleted
from mtm.contracts.events import TaskCompletion
from mtm.contracts.subjects import event_subject


def new_patient_id() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def review_task_completed(
    patient_id: str, *, physician: str | None = "dr-house", recommendations: int = 1, pharmacist: str = "rph-1"
) -> ReviewTaskCompleted:
    recs = tuple(
        Recommendation(
            recommendation_id=uuid.uuid4(),
            text=f"Restart home medication #{i}",
            action="start",
            ingredients=("atorvastatin",),
            needs_prescriber=True,
        )
        for i in range(recommendations)
    ) + (
        Recommendation(
            recommendation_id=uuid.uuid4(), text="Counsel on adherence", action="educate", needs_prescriber=False
        ),
    )
    return ReviewTaskCompleted.create(
        source="test",
        patient_id=patient_id,
        data=TaskCompletion(
            task_id=uuid.uuid4(),
            pharmacist_id=pharmacist,
            recommendations=recs,
            care_team=CareTeam(primary_care_physician_id=physician),
        ),
    )


async def publish_event(nc: Client, event: EventEnvelope) -> PubAck:
    return await nc.jetstream().publish(
        event_subject(event), event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
    )
