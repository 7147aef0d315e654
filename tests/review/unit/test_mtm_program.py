"""The MTM program's clock and rules, by hand: windows, what a review counts as, who may move a task, overrides."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from mtm.contracts import MedicationEntry, MtmDisenrolled, MtmEnrolled, ReconciledItem
from mtm.contracts.documentation import DrugTherapyProblem, PersonalMedication, ReviewDocumentation
from mtm.contracts.events import (
    Alert,
    Discrepancy,
    IngredientDose,
    Recommendation,
    ReviewTask,
    ReviewTaskClaimed,
    ReviewTaskCreated,
    ReviewTaskOverdue,
    ReviewTaskReassigned,
    ReviewTaskReleased,
    TaskClaim,
    TaskOverdue,
    TaskReassignment,
    TaskRelease,
)
from mtm.contracts.identity import Actor
from mtm.review.domain.documentation import DocumentationError, checked_documentation, directions
from mtm.review.domain.overrides import ActiveOverride, alert_key, regimen, suppressing
from mtm.review.domain.program import (
    DueReview,
    action_plan_due,
    annual_review,
    decide_due_review,
    enrolment_reviews,
    is_enrolled,
    next_quarter_start,
    service_of,
)
from mtm.review.domain.tasks import ESCALATION, TaskState, decide_reassignment, decide_release, fold_task

pytestmark = pytest.mark.unit
RPH = Actor(user_id="ana", role="pharmacist", practitioner_id="rph-ana")
OTHER = Actor(user_id="ben", role="pharmacist", practitioner_id="rph-ben")
ADMIN = Actor(user_id="lead", role="admin")


def test_an_enrolment_offers_the_cmr_within_60_days_and_schedules_the_next_quarters_tmr() -> None:
    enrolled = datetime(2026, 11, 24, tzinfo=UTC)
    cmr, quarterly = enrolment_reviews(uuid.uuid4(), "p1", enrolled)
    assert (cmr.service, cmr.trigger, cmr.opens_at, cmr.due) == ("cmr", "enrolment", enrolled, enrolled + timedelta(60))
    assert (quarterly.service, quarterly.opens_at, quarterly.due) == (
        "tmr",
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2027, 4, 1, tzinfo=UTC),
    )
    # One quarterly TMR per member and quarter, whichever enrolment scheduled it.
    assert enrolment_reviews(uuid.uuid4(), "p1", enrolled)[1].schedule_id == quarterly.schedule_id
    assert next_quarter_start(datetime(2026, 12, 31, 23, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)


def test_the_yearly_cmr_is_due_a_year_after_the_last_and_its_summary_within_14_days() -> None:
    annual = annual_review(uuid.uuid4(), date(2026, 3, 10))
    assert annual.due == datetime(2027, 3, 10, tzinfo=UTC) and annual.opens_at == annual.due - timedelta(days=60)
    assert action_plan_due(date(2026, 3, 10)) == datetime(2026, 3, 25, tzinfo=UTC)  # end of 24 March


@pytest.mark.parametrize(
    ("service", "trigger", "enrolled", "open_task", "open_is_cmr", "reviewed", "expected"),
    [
        ("cmr", "enrolment", True, None, False, False, ("open", None)),
        ("cmr", "enrolment", False, None, False, False, ("skip", "not-enrolled")),
        ("cmr", "enrolment", True, "t", False, False, ("open", None)),  # a TMR in progress does not cover a CMR
        ("cmr", "annual", True, "t", True, False, ("skip", "open-review")),
        ("cmr", "annual", True, None, False, True, ("skip", "already-reviewed")),
        ("tmr", "quarterly", True, "t", False, False, ("skip", "open-review")),
        ("tmr", "quarterly", True, None, False, True, ("skip", "already-reviewed")),
        ("tmr", "adherence", True, None, False, True, ("open", None)),  # a trigger is about something new
        ("tmr", "adherence", False, None, False, False, ("skip", "not-enrolled")),
        ("tmr", "follow-up", False, None, False, False, ("open", None)),  # the pharmacist's own commitment
    ],
)
def test_a_due_review_opens_unless_something_covers_it(
    service, trigger, enrolled, open_task, open_is_cmr, reviewed, expected
) -> None:
    due = DueReview(service, trigger, enrolled, uuid.uuid4() if open_task else None, open_is_cmr, reviewed)
    assert decide_due_review(due) == expected


def test_what_a_completed_review_counts_as_for_cms() -> None:
    assert service_of("comprehensive-medication-review", enrolled=True) == "cmr"
    assert service_of("post-discharge-review", enrolled=True) == "tmr"  # the TMR its discharge triggers
    assert service_of("post-discharge-review", enrolled=False) is None
    assert service_of("targeted-medication-review", enrolled=False) is None


def test_membership_is_the_last_word_of_the_log() -> None:
    from support.events import mtm_enrolled

    enrolled = mtm_enrolled("p1")
    left = MtmDisenrolled.create(
        source="test",
        patient_id="p1",
        data={"program_year": 2026, "disenrolled_on": date(2026, 12, 1), "reason": "opted-out"},
    )
    assert is_enrolled([enrolled]) and not is_enrolled([enrolled, left]) and is_enrolled([enrolled, left, enrolled])
    assert not is_enrolled([])
    assert isinstance(enrolled, MtmEnrolled)


def test_an_overdue_task_climbs_one_step_and_stat_stays_stat() -> None:
    assert [ESCALATION[p] for p in ("routine", "urgent", "asap", "stat")] == ["urgent", "asap", "stat", "stat"]


def _task(task_id: uuid.UUID, **fields) -> ReviewTaskCreated:
    data = ReviewTask(task_id=task_id, priority="routine", focus_event_id=uuid.uuid4(), **fields)
    return ReviewTaskCreated.create(source="t", patient_id="p1", data=data)


def test_a_task_folds_claims_releases_reassignments_and_escalation() -> None:
    task_id = uuid.uuid4()
    events = [
        _task(task_id),
        ReviewTaskClaimed.create(source="t", patient_id="p1", data=TaskClaim(task_id=task_id, pharmacist_id="rph-ben")),
        ReviewTaskReleased.create(
            source="t", patient_id="p1", data=TaskRelease(task_id=task_id, pharmacist_id="rph-ben")
        ),
        ReviewTaskReassigned.create(
            source="t", patient_id="p1", data=TaskReassignment(task_id=task_id, to_pharmacist_id="rph-ana")
        ),
        ReviewTaskOverdue.create(
            source="t",
            patient_id="p1",
            data=TaskOverdue(task_id=task_id, due=datetime.now(UTC), priority="urgent", previous_priority="routine"),
        ),
    ]
    state = fold_task(events, task_id).state
    assert (state.status, state.owner, state.claims, state.moves, state.priority) == (
        "in-progress",
        "rph-ana",
        1,
        2,
        "urgent",
    )


@pytest.mark.parametrize(
    ("status", "owner", "actor", "outcome"),
    [
        ("in-progress", "rph-ana", RPH, "accepted"),
        ("in-progress", "rph-ana", OTHER, "conflict"),
        ("in-progress", "rph-ana", ADMIN, "accepted"),
        ("requested", None, RPH, "already"),
        ("completed", "rph-ana", RPH, "conflict"),
    ],
)
def test_only_the_owner_or_an_admin_releases_a_task(status, owner, actor, outcome) -> None:
    assert decide_release(TaskState(uuid.uuid4(), status, owner), actor).outcome == outcome


@pytest.mark.parametrize(
    ("status", "owner", "actor", "to", "outcome"),
    [
        ("in-progress", "rph-ana", RPH, "rph-ben", "accepted"),
        ("in-progress", "rph-ana", OTHER, "rph-ben", "conflict"),
        ("requested", None, ADMIN, "rph-ben", "accepted"),
        ("requested", None, RPH, "rph-ben", "conflict"),
        ("in-progress", "rph-ben", ADMIN, "rph-ben", "already"),
        ("completed", "rph-ana", ADMIN, "rph-ben", "conflict"),
    ],
)
def test_the_owner_hands_a_task_on_and_an_admin_assigns_any_open_one(status, owner, actor, to, outcome) -> None:
    assert decide_reassignment(TaskState(uuid.uuid4(), status, owner), actor, to).outcome == outcome


def _item(name: str, mg: float, route: str = "oral") -> ReconciledItem:
    entry = MedicationEntry(
        text=f"{name} {mg:g} mg", dose_value=1, dose_unit="tablet", route=route, frequency="BID", frequency_per_day=2
    )
    return ReconciledItem(
        ingredients=(name,),
        status="continued",
        discharge=entry,
        route=route,
        ingredient_doses=(IngredientDose(ingredient=name, daily_amount=mg, unit="mg"),),
    )


ALERT = Alert(
    kind="interaction",
    severity="moderate",
    tier="passive",
    ingredients=("warfarin", "aspirin"),
    message="Bleeding risk",
    source="test",
    rule_id="r-1",
)


def test_documentation_links_problems_to_the_task_and_fills_the_list_from_the_chart() -> None:
    items = (_item("warfarin", 5), _item("aspirin", 81))
    omission = Discrepancy(type="omission", ingredients=("atorvastatin",), message="omitted")
    task = ReviewTask(
        task_id=uuid.uuid4(),
        priority="urgent",
        focus_event_id=uuid.uuid4(),
        items=items,
        alerts=(ALERT,),
        discrepancies=(omission,),
    )
    from_alert = DrugTherapyProblem(problem_id=uuid.uuid4(), category="adverse-drug-reaction", detail="x", alert=0)
    from_gap = DrugTherapyProblem(
        problem_id=uuid.uuid4(), category="needs-additional-drug-therapy", detail="y", discrepancy=0
    )
    documentation = ReviewDocumentation(
        performed_on=date(2026, 11, 20), delivery_method="telephone", problems=(from_alert, from_gap)
    )
    rec = Recommendation(recommendation_id=uuid.uuid4(), text="z", problem_id=from_alert.problem_id)
    done = checked_documentation(documentation, task, [rec], items)
    assert done.problems[0].rule_id == "r-1" and done.problems[0].ingredients == ("warfarin", "aspirin")
    assert done.problems[1].ingredients == ("atorvastatin",)
    assert [m.how_i_use_it for m in done.medications] == ["1 tablet by mouth twice a day"] * 2
    kept = documentation.model_copy(update={"medications": (PersonalMedication(name="A", how_i_use_it="b"),)})
    assert [m.name for m in checked_documentation(kept, task, [], items).medications] == ["A"]

    with pytest.raises(DocumentationError, match=r"problems\.0\.alert"):
        bad = from_alert.model_copy(update={"alert": 1})
        checked_documentation(documentation.model_copy(update={"problems": (bad,)}), task, [], items)
    with pytest.raises(DocumentationError, match=r"recommendations\.0\.problem_id"):
        stray = rec.model_copy(update={"problem_id": uuid.uuid4()})
        checked_documentation(documentation, task, [stray], items)


def test_directions_are_written_for_the_member() -> None:
    assert directions(
        MedicationEntry(text="x", dose_value=2, dose_unit="puff", route="inhalation", frequency="Q4H", as_needed=True)
    ) == ("2 puff inhalation Q4H when needed")
    assert directions(MedicationEntry(text="x")) == "as directed"


def test_an_override_holds_until_the_drugs_change_or_the_alert_gets_worse() -> None:
    taken = (_item("warfarin", 5), _item("aspirin", 81))
    active = ActiveOverride("o-1", alert_key(ALERT), "moderate", regimen(ALERT.ingredients, taken))
    assert suppressing(ALERT, taken, [active]) == "o-1"
    assert suppressing(ALERT, (_item("warfarin", 7.5), _item("aspirin", 81)), [active]) is None
    assert suppressing(ALERT, (_item("warfarin", 5, route="iv"), _item("aspirin", 81)), [active]) is None
    worse = ALERT.model_copy(update={"severity": "high"})
    assert suppressing(worse, taken, [active]) is None
    other_rule = ALERT.model_copy(update={"rule_id": "r-2"})
    assert suppressing(other_rule, taken, [active]) is None
