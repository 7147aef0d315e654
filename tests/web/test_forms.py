"""The task page's pure parts: the completion form read into the review contracts, and what each person may do."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from starlette.datastructures import FormData

from mtm.contracts.identity import Actor
from mtm.web.forms import FormError, completion_of, medication_rows
from mtm.web.views import permissions, review_of

pytestmark = pytest.mark.unit
ANA = Actor(user_id="ana", role="pharmacist", practitioner_id="rph-ana")
BEN = Actor(user_id="ben", role="pharmacist", practitioner_id="rph-ben")
ROOT = Actor(user_id="root", role="admin")
LEE = Actor(user_id="drlee", role="physician", practitioner_id="prac-pcp-42")
CMR_FORM = {
    "doc-performed-on": "2026-03-02",
    "doc-delivery-method": "telephone",
    "prob-1-detail": "Omeprazole with clopidogrel",
    "prob-1-category": "adverse-drug-reaction",
    "prob-1-origin": "alert-2",
    "prob-1-mitigation": "5",
    "rec-0-text": "Switch omeprazole to pantoprazole",
    "rec-0-refer": "on",
    "rec-0-problem": "1",
    "rec-2-text": "Take clopidogrel every morning",
    "plan-0-topic": "Your stomach medicine",
    "plan-0-steps": "Ask Dr. Lee about pantoprazole.\n\n  Take it before breakfast. ",
    "plan-0-rec": "0",
    "pml-0-name": "Clopidogrel 75 mg tablet",
    "pml-0-ingredients": "clopidogrel",
    "pml-0-how": "1 tablet every morning",
    "pml-3-name": "",
    "doc-allergies": "Penicillin (rash); sulfa",
    "fu-1-due": "2026-04-01",
    "fu-1-reason": "Check heartburn",
}


def form(**fields: str) -> FormData:
    return FormData(list(fields.items()))


def test_a_documented_review_links_its_rows_by_number():
    parts = completion_of(form(**CMR_FORM), documented=True)
    switch, morning = parts["recommendations"]
    doc = parts["documentation"]
    [problem] = doc.problems
    assert (problem.alert, problem.category, [m.action for m in problem.mitigations]) == (
        2,
        "adverse-drug-reaction",
        ["5"],
    )
    assert switch.needs_prescriber and switch.problem_id == problem.problem_id and morning.problem_id is None
    [item] = doc.action_plan
    assert item.steps == ("Ask Dr. Lee about pantoprazole.", "Take it before breakfast.")
    assert item.recommendation_id == switch.recommendation_id
    assert (doc.performed_on, doc.delivery_method, doc.recipient) == (date(2026, 3, 2), "telephone", "beneficiary")
    assert [m.ingredients for m in doc.medications] == [("clopidogrel",)]
    assert doc.allergies == ("Penicillin (rash)", "sulfa")
    [follow_up] = parts["follow_ups"]
    assert follow_up.due == datetime(2026, 4, 1, 12, tzinfo=UTC) and follow_up.reason == "Check heartburn"


def test_an_undocumented_review_carries_no_problems_or_papers():
    parts = completion_of(form(**CMR_FORM), documented=False)
    assert parts["documentation"] is None
    assert all(r.problem_id is None for r in parts["recommendations"])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"plan-0-steps": " "}, "action plan 'Your stomach medicine': write at least one step"),
        ({"plan-0-steps": "\n".join("abcdef")}, "at most 5 steps"),
        ({"fu-1-reason": ""}, "follow-up 2: give both the date and the reason"),
        ({"fu-1-due": "1 April"}, "follow-up 2 date: '1 April' is not a date"),
        ({"pml-0-how": ""}, "medication list 'Clopidogrel 75 mg tablet': say how the member uses it"),
        ({"doc-performed-on": ""}, "date of the review: required"),
    ],
)
def test_a_form_that_cannot_become_a_command_says_which_field(change, says):
    with pytest.raises(FormError, match=says):
        completion_of(form(**{**CMR_FORM, **change}), documented=True)


def test_the_medication_list_starts_from_what_the_member_takes_now():
    taken = {"text": "Lipitor 40 mg", "dose_value": 1.0, "dose_unit": "tablet", "frequency": "once daily"}
    items = [
        {"status": "continued", "ingredients": ["atorvastatin"], "discharge": taken},
        {"status": "stopped", "ingredients": ["aspirin"], "home": {"text": "Aspirin 81 mg"}, "discharge": None},
        {"status": "new", "ingredients": ["apixaban"], "discharge": {"text": "Apixaban 5 mg"}},
    ]
    rows = medication_rows(items)
    assert [(r["name"], r["how"]) for r in rows] == [
        ("Lipitor 40 mg", "1 tablet once daily"),
        ("Apixaban 5 mg", "as directed"),
    ]


def task(status: str, owner: str | None, reason: str = "post-discharge-review", documented: bool = False) -> dict:
    completion = {"documentation": {"performed_on": "2026-03-02"} if documented else None}
    return {
        "task_id": "t1",
        "status": status,
        "owner": owner,
        "task": {"reason": reason, "alerts": [{"kind": "interaction"}, {"kind": "dose"}]},
        "completion": completion if status == "completed" else None,
    }


def allowed(task: dict, actor: Actor) -> set[str]:
    return {name for name, yes in permissions(task, actor).items() if yes}


def test_only_what_the_person_may_do_is_offered():
    assert allowed(task("requested", None), ANA) == {"claim"}
    assert allowed(task("requested", None), ROOT) == {"reassign"}
    assert allowed(task("in-progress", "rph-ana"), ANA) == {"complete", "override", "release", "reassign"}
    assert allowed(task("in-progress", "rph-ana"), BEN) == set()
    assert allowed(task("in-progress", "rph-ana"), ROOT) == {"release", "reassign"}
    assert allowed(task("completed", "rph-ana"), BEN) == {"record_outcome"}
    cmr = task("completed", "rph-ana", "comprehensive-medication-review", documented=True)
    assert allowed(cmr, BEN) == {"record_outcome", "deliver", "action_plan"}
    assert allowed(cmr, ROOT) == {"action_plan"}
    assert allowed(cmr, LEE) == {"action_plan"}


def test_a_tasks_part_of_the_review_record():
    record = {
        "tasks": [{"task_id": "t1", "task": {"alerts": [{"kind": "interaction"}, {"kind": "dose"}]}}],
        "overrides": [{"task_id": "t1", "alert": 1, "reason": "Watching"}, {"task_id": "t0", "alert": 0}],
        "recommendations": [{"task_id": "t1", "text": "a"}, {"task_id": "t0", "text": "b"}],
        "follow_ups": [],
        "action_plans": [{"task_id": "t1", "delivered_on": None}],
    }
    review = review_of(task("completed", "rph-ana"), record)
    assert [(a["index"], (a["override"] or {}).get("reason")) for a in review["alerts"]] == [(0, None), (1, "Watching")]
    assert [r["text"] for r in review["recommendations"]] == ["a"] and review["action_plan"]["task_id"] == "t1"
    bare = review_of(task("requested", None), None)
    assert [a["index"] for a in bare["alerts"]] == [0, 1] and bare["action_plan"] is None
