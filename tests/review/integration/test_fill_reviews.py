"""Pharmacy fills reach review on real NATS and Postgres: a fill that adds a high-severity interaction to a member's
list opens a targeted review (the real knowledge base checks it), once per finding; refills open nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import declare_as_owner
from support import actors
from support.events import mtm_enrolled, new_patient_id, publish_event, warfarin_and_simvastatin_continued
from support.jetstream import wait_for

from mtm.contracts import (
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    GetReviewRecord,
    ListReviewTasks,
    MedicationDispensed,
    MedicationEntry,
)
from mtm.contracts.program import Dispense
from mtm.contracts.subjects import CLAIM_REVIEW_TASK, COMPLETE_REVIEW_TASK, GET_REVIEW_RECORD, LIST_REVIEW_TASKS
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review.bootstrap import create_app
from mtm.review.settings import ReviewSettings

pytestmark = pytest.mark.integration
RPH = "rph-ana"
TMR = "targeted-medication-review"


def dispensed(patient_id: str, text: str, ingredient: str) -> MedicationDispensed:
    return MedicationDispensed.create(
        source="test",
        patient_id=patient_id,
        data=Dispense(
            dispense_id=f"rx-{uuid.uuid4().hex[:8]}",
            medication=MedicationEntry(text=text),
            ingredients=(ingredient,),
            days_supply=30,
            filled_on=datetime.now(UTC).date(),
            pharmacy_id="pharm-1",
        ),
    )


async def ask(nc, subject: str, body) -> CommandReply:
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=actors.pharmacist(RPH))
    return CommandReply.model_validate_json(reply.data)


async def tasks_of(nc, patient: str, **filters) -> list[dict]:
    return (await ask(nc, LIST_REVIEW_TASKS, ListReviewTasks(patient_id=patient, **filters))).data


async def test_a_fill_adding_a_high_interaction_opens_one_targeted_review(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    member = new_patient_id()
    async with run_service(create_app(settings_for(ReviewSettings, review_timer_every_s=0.05))):
        await publish_event(nc, warfarin_and_simvastatin_continued(member))
        await wait_for(lambda: tasks_of(nc, member), timeout_s=20)
        await publish_event(nc, mtm_enrolled(member))

        async def cmr_offered():
            return await tasks_of(nc, member, reason="comprehensive-medication-review")

        await wait_for(cmr_offered, timeout_s=20)

        async def fill_reviews(count: int):
            found = [t for t in await tasks_of(nc, member, reason=TMR) if t["trigger"] == "high-alert"]
            return found if len(found) >= count else None

        # Fluconazole filled on top of warfarin: a new high-severity interaction for a member.
        await publish_event(nc, dispensed(member, "Fluconazole 150 MG Oral Tablet", "fluconazole"))
        (first,) = await wait_for(lambda: fill_reviews(1), timeout_s=20)
        assert first["priority"] in ("urgent", "asap") and first["status"] == "requested"
        due_in = datetime.fromisoformat(first["due"]) - datetime.fromisoformat(first["created_at"])
        assert timedelta(days=2) < due_in <= timedelta(days=3)

        # A refill of the same drug finds nothing new; the next fill of this member (same partition, in log order)
        # adds another high interaction, with simvastatin: when its review is there, the refill was checked.
        await publish_event(nc, dispensed(member, "Fluconazole 150 MG Oral Tablet", "fluconazole"))
        await publish_event(nc, dispensed(member, "Clarithromycin 500 MG Oral Tablet", "clarithromycin"))
        reviews = await wait_for(lambda: fill_reviews(2), timeout_s=20)
        assert len(reviews) == 2
        second = next(t for t in reviews if t["task_id"] != first["task_id"])

        # Each review lists the drugs the member takes now, fill included, and only the alerts that are new.
        record = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=member))).data
        whole = {t["task_id"]: t["task"] for t in record["tasks"]}
        first_alerts = whole[first["task_id"]]["alerts"]
        assert "cur.warfarin.fluconazole" in {a["rule_id"] for a in first_alerts}
        assert all(a["severity"] == "high" and "fluconazole" in a["ingredients"] for a in first_alerts)
        second_alerts = whole[second["task_id"]]["alerts"]
        assert "lbl.simvastatin.strong_cyp3a4" in {a["rule_id"] for a in second_alerts}
        assert all(a["severity"] == "high" and "clarithromycin" in a["ingredients"] for a in second_alerts)
        taken = {
            i for item in whole[second["task_id"]]["items"] if item["status"] != "stopped" for i in item["ingredients"]
        }
        assert taken == {"warfarin", "simvastatin", "fluconazole", "clarithromycin"}

        claim = ClaimReviewTask(task_id=uuid.UUID(first["task_id"]))
        assert (await ask(nc, CLAIM_REVIEW_TASK, claim)).ok
        done = CompleteReviewTask(task_id=uuid.UUID(first["task_id"]), note="INR check booked")
        assert (await ask(nc, COMPLETE_REVIEW_TASK, done)).ok
        completed = (await tasks_of(nc, member, status="completed", reason=TMR))[0]
        assert completed["service"] == "tmr"  # counted as a TMR for the CMS report
