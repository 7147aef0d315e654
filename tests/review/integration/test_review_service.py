"""Review service on real NATS and Postgres: tasks reach pharmacists' tools; claims race; completion is final."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from conftest import declare_as_owner
from support import actors
from support.events import medications_reconciled, new_patient_id, publish_event
from support.jetstream import Collector, stream_messages, wait_for

from mtm.contracts import (
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    ListReviewTasks,
    Recommendation,
    ReviewTaskCompleted,
    ReviewTaskCreated,
)
from mtm.contracts.subjects import (
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    LIST_REVIEW_TASKS,
    PATIENT_EVENTS_STREAM,
    event_filter,
)
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review.bootstrap import create_app
from mtm.review.settings import ReviewSettings

pytestmark = pytest.mark.integration


def no_alerts(rec):
    return [], "urgent" if rec.discrepancies else "routine"


async def send(nc, subject: str, command, as_: str = "rph-1") -> CommandReply:
    reply = await nc.request(subject, command.model_dump_json().encode(), timeout=5, headers=actors.pharmacist(as_))
    return CommandReply.model_validate_json(reply.data)


async def test_a_task_reaches_a_subscribed_tool_and_one_of_two_racing_pharmacists_wins(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    tool = await Collector().start(nc, event_filter(ReviewTaskCreated))
    reconciled = medications_reconciled(new_patient_id())
    async with run_service(create_app(settings_for(ReviewSettings), checker=no_alerts)):
        await publish_event(nc, reconciled)
        await wait_for(lambda: tool.messages, timeout_s=5)
        created = ReviewTaskCreated.model_validate_json(tool.messages[0].data)
        task_id = created.data.task_id
        assert created.data.priority == "urgent"
        assert [d.type for d in created.data.discrepancies] == ["omission"]
        assert created.causation_id == reconciled.id and created.correlation_id == reconciled.correlation_id

        for _ in range(3):
            await publish_event(nc, medications_reconciled(new_patient_id()))
        claims = await asyncio.gather(
            *(send(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), as_=f"rph-{i}") for i in range(8))
        )
        assert sorted(c.outcome for c in claims) == ["accepted"] + ["conflict"] * 7
        winner = f"rph-{[c.outcome for c in claims].index('accepted')}"
        loser = "rph-x"

        recommendation = Recommendation(
            recommendation_id=uuid.uuid4(), text="Restart atorvastatin", action="start", needs_prescriber=True
        )
        complete = CompleteReviewTask(task_id=task_id, recommendations=(recommendation,))
        assert (await send(nc, COMPLETE_REVIEW_TASK, complete, as_=loser)).outcome == "conflict"
        assert (await send(nc, COMPLETE_REVIEW_TASK, complete, as_=winner)).outcome == "accepted"
        assert (await send(nc, COMPLETE_REVIEW_TASK, complete, as_=winner)).outcome == "conflict"
        unknown = await send(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=uuid.uuid4()))
        assert unknown.outcome == "not_found"
        assert (await send(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), as_=winner)).outcome == "conflict"

        async def queue():
            # The other three tasks are opened as their reconciliations arrive: wait for them, don't race them.
            reply = await send(nc, LIST_REVIEW_TASKS, ListReviewTasks(status="requested"))
            return reply if reply.ok and len(reply.data) == 3 else None

        await wait_for(queue)

        completed = await wait_for(
            lambda: stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCompleted))
        )
    await tool.stop()
    event = ReviewTaskCompleted.model_validate_json(completed[0].data)
    assert event.data.pharmacist_id == winner
    assert event.data.care_team.primary_care_physician_id == "dr-house"
    assert event.data.recommendations == (recommendation,)
    assert len(completed) == 1


async def test_review_tasks_carry_the_drug_alerts_and_their_priority(clean_jetstream, settings_for, run_service):
    from mtm.contracts import MedicationEntry, MedicationsReconciled, ReconciledItem
    from mtm.contracts.events import IngredientDose, Reconciliation

    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient = new_patient_id()

    def current(ingredient: str, text: str, mg: float) -> ReconciledItem:
        entry = MedicationEntry(text=text, dose_value=mg, dose_unit="mg", frequency="daily", frequency_per_day=1)
        return ReconciledItem(
            ingredients=(ingredient,),
            status="continued",
            home=entry,
            discharge=entry,
            route="oral",
            frequency_per_day=1,
            ingredient_doses=(IngredientDose(ingredient=ingredient, amount=mg, unit="mg", daily_amount=mg),),
        )

    reconciled = medications_reconciled(patient)
    reconciled = MedicationsReconciled.model_validate(
        reconciled.model_dump()
        | {
            "data": Reconciliation(
                transition_event_id=uuid.uuid4(),
                patient=reconciled.data.patient,
                items=(
                    current("sildenafil", "Sildenafil 50 MG Oral Tablet", 50),
                    current("isosorbide mononitrate", "Isosorbide mononitrate 30 MG Extended Release Tablet", 30),
                ),
            )
        }
    )
    async with run_service(create_app(settings_for(ReviewSettings))):
        await publish_event(nc, reconciled)
        (message,) = await wait_for(lambda: stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated)))
    task = ReviewTaskCreated.model_validate_json(message.data).data
    interaction = next(a for a in task.alerts if a.kind == "interaction")
    assert interaction.severity == "high" and interaction.tier == "interruptive"
    assert set(interaction.ingredients) == {"sildenafil", "isosorbide mononitrate"}
    assert interaction.source
    assert task.priority == "asap"
