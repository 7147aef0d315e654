"""Completing a review, decided on the patient's history: what is refused, and why, before anything is recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from support.events import medications_reconciled

from mtm.contracts import ClaimReviewTask, CompleteReviewTask, Recommendation
from mtm.contracts.clinical import CareTeam
from mtm.contracts.identity import Actor
from mtm.platform.decisions import PatientHistory, StoredEvent
from mtm.review.application import claim_task, complete_task, open_review_task

pytestmark = pytest.mark.unit
PHARMACIST = Actor(user_id="ana", role="pharmacist", practitioner_id="rph-ana")
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def claimed_task(care_team: CareTeam):
    """A task opened on a reconciliation with this care team, claimed by the pharmacist: the history and its id."""
    reconciled = medications_reconciled("p-1")
    reconciled = reconciled.model_copy(update={"data": reconciled.data.model_copy(update={"care_team": care_team})})
    (created,) = open_review_task(reconciled, check=lambda _rec: ([], "routine"))
    task_id = created.data.task_id
    history = PatientHistory("p-1", (StoredEvent(1, created),), last_seq=1)
    (claimed,) = claim_task(history, ClaimReviewTask(task_id=task_id), PHARMACIST, NOW).events
    return PatientHistory("p-1", (StoredEvent(1, created), StoredEvent(2, claimed)), last_seq=2), task_id


def recommendation(*, needs_prescriber: bool) -> Recommendation:
    return Recommendation(
        recommendation_id=uuid.uuid4(), text="Restart atorvastatin", needs_prescriber=needs_prescriber
    )


def test_a_prescriber_recommendation_without_a_physician_to_ask_is_refused_and_nothing_is_recorded() -> None:
    history, task_id = claimed_task(CareTeam())
    command = CompleteReviewTask(task_id=task_id, recommendations=(recommendation(needs_prescriber=True),))
    decision = complete_task(history, command, PHARMACIST, NOW)
    assert decision.reply.outcome == "invalid"
    assert "no primary-care or attending physician" in decision.reply.message
    assert decision.events == ()


@pytest.mark.parametrize(
    ("care_team", "needs_prescriber"),
    [(CareTeam(), False), (CareTeam(attending_physician_id="dr-ward"), True)],
)
def test_a_completion_is_recorded_when_someone_can_answer_it(care_team: CareTeam, needs_prescriber: bool) -> None:
    history, task_id = claimed_task(care_team)
    command = CompleteReviewTask(task_id=task_id, recommendations=(recommendation(needs_prescriber=needs_prescriber),))
    decision = complete_task(history, command, PHARMACIST, NOW)
    assert decision.reply.ok, decision.reply.message
    assert decision.events
