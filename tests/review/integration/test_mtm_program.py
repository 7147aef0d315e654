"""The MTM program on real NATS and Postgres: a CMR from enrolment to the member's papers and the prescriber's
answer back as the recommendation's outcome; overrides that hold until the drugs change; deadlines that fire once
across a restart and two replicas."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from conftest import declare_as_owner
from pypdf import PdfReader
from support import actors
from support.events import mtm_enrolled, new_patient_id, publish_event
from support.jetstream import stream_messages, wait_for

from mtm.contracts import (
    ActionPlanOverdue,
    AnswerReferral,
    CareTeam,
    ClaimReviewTask,
    CommandReply,
    CompleteReviewTask,
    FollowUpRequest,
    GetActionPlan,
    GetReviewRecord,
    ListAlertRuleStats,
    ListReferrals,
    ListReviewTasks,
    MedicationEntry,
    MedicationsReconciled,
    OverrideAlert,
    PatientDemographics,
    ReassignReviewTask,
    Recommendation,
    ReconciledItem,
    ReferralRequested,
    ReleaseReviewTask,
    ReviewTaskOverdue,
)
from mtm.contracts.documentation import (
    ActionPlanDocument,
    ActionPlanItem,
    DrugTherapyProblem,
    Mitigation,
    PersonalMedication,
    ReviewDocumentation,
)
from mtm.contracts.events import Alert, IngredientDose, Reconciliation
from mtm.contracts.subjects import (
    ANSWER_REFERRAL,
    CLAIM_REVIEW_TASK,
    COMPLETE_REVIEW_TASK,
    GET_ACTION_PLAN,
    GET_REVIEW_RECORD,
    LIST_ALERT_RULE_STATS,
    LIST_REFERRALS,
    LIST_REVIEW_TASKS,
    OVERRIDE_ALERT,
    PATIENT_EVENTS_STREAM,
    REASSIGN_REVIEW_TASK,
    RELEASE_REVIEW_TASK,
    event_filter,
)
from mtm.documents import Letterhead, render_html, render_pdf
from mtm.documents.action_plan import STANDARD_HEADINGS
from mtm.fhir.export import action_plan_bundle, check_bundle, patient_bundle
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review.bootstrap import create_app
from mtm.review.settings import ReviewSettings

pytestmark = pytest.mark.integration
RPH = "rph-ana"
PCP = "dr-okafor"
CMR = "comprehensive-medication-review"


def interaction_checker(rec: Reconciliation):
    """One high interaction when clopidogrel and omeprazole are both taken (the way the DUR engine reports it)."""
    taken = {i for item in rec.items if item.status != "stopped" for i in item.ingredients}
    if {"clopidogrel", "omeprazole"} <= taken:
        alert = Alert(
            kind="interaction",
            severity="high",
            tier="interruptive",
            ingredients=("clopidogrel", "omeprazole"),
            message="Omeprazole reduces clopidogrel activation.",
            source="FDA label (Plavix)",
            rule_id="test-clopidogrel-omeprazole",
        )
        return [alert], "asap"
    return [], "routine"


def _item(name: str, mg: float, *, status: str = "continued") -> ReconciledItem:
    entry = MedicationEntry(text=f"{name.title()} {mg:g} MG Oral Tablet", dose_value=mg, dose_unit="mg", frequency="QD")
    dose = IngredientDose(ingredient=name, amount=mg, unit="mg", daily_amount=mg)
    return ReconciledItem(
        ingredients=(name,), status=status, home=entry, discharge=entry, route="oral", ingredient_doses=(dose,)
    )


def discharge(patient_id: str, omeprazole_mg: float = 20, *, days_ago: float = 0) -> MedicationsReconciled:
    return MedicationsReconciled.create(
        source="test",
        patient_id=patient_id,
        data=Reconciliation(
            transition_event_id=uuid.uuid4(),
            patient=PatientDemographics(patient_id=patient_id),
            discharged_at=datetime.now(UTC) - timedelta(days=days_ago),
            care_team=CareTeam(primary_care_physician_id=PCP),
            items=(_item("clopidogrel", 75), _item("omeprazole", omeprazole_mg)),
        ),
    )


async def ask(nc, subject: str, body, headers=None) -> CommandReply:
    reply = await nc.request(
        subject, body.model_dump_json().encode(), timeout=10, headers=headers or actors.pharmacist(RPH)
    )
    return CommandReply.model_validate_json(reply.data)


def review_app(settings_for):
    return create_app(settings_for(ReviewSettings, review_timer_every_s=0.05), checker=interaction_checker)


async def tasks_of(nc, patient: str, **filters) -> list[dict]:
    return (await ask(nc, LIST_REVIEW_TASKS, ListReviewTasks(patient_id=patient, **filters))).data


async def test_a_cmr_from_enrolment_to_the_papers_and_the_prescribers_answer_as_its_outcome(
    clean_jetstream, settings_for, run_service
):
    from mtm.referral.bootstrap import ReferralSettings
    from mtm.referral.bootstrap import create_app as referral_app

    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    member = new_patient_id()
    async with run_service(review_app(settings_for)), run_service(referral_app(settings_for(ReferralSettings))):
        await publish_event(nc, discharge(member))
        await wait_for(lambda: tasks_of(nc, member), timeout_s=10)
        await publish_event(nc, mtm_enrolled(member))

        async def cmr_opened():
            return await tasks_of(nc, member, reason=CMR)

        cmr = (await wait_for(cmr_opened, timeout_s=10))[0]
        assert cmr["trigger"] == "enrolment" and cmr["status"] == "requested"
        offered = datetime.fromisoformat(cmr["due"]) - datetime.fromisoformat(cmr["created_at"])
        assert timedelta(days=59) < offered <= timedelta(days=60)  # offered within 60 days of enrolment
        task_id = uuid.UUID(cmr["task_id"])

        # Claimed, released, claimed by someone else and handed back by an admin: each an event with its actor.
        assert (await ask(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), actors.pharmacist("rph-ben"))).ok
        refused = await ask(nc, RELEASE_REVIEW_TASK, ReleaseReviewTask(task_id=task_id))
        assert refused.outcome == "conflict", refused.message
        assert (await ask(nc, RELEASE_REVIEW_TASK, ReleaseReviewTask(task_id=task_id), actors.pharmacist("rph-ben"))).ok
        assert (await ask(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id), actors.pharmacist("rph-cy"))).ok
        assert (
            await ask(nc, REASSIGN_REVIEW_TASK, ReassignReviewTask(task_id=task_id, pharmacist_id=RPH), actors.ADMIN)
        ).ok
        assert (await tasks_of(nc, member, mine=True, reason=CMR))[0]["owner"] == RPH

        problem = DrugTherapyProblem(
            problem_id=uuid.uuid4(),
            category="adverse-drug-reaction",
            severity="high",
            detail="Omeprazole with clopidogrel after a stent",
            ingredients=("clopidogrel", "omeprazole"),
            mitigations=(Mitigation(action="5"),),
        )
        to_prescriber = Recommendation(
            recommendation_id=uuid.uuid4(),
            text="Switch omeprazole to pantoprazole 40 mg daily",
            action="substitute",
            needs_prescriber=True,
            problem_id=problem.problem_id,
        )
        to_patient = Recommendation(recommendation_id=uuid.uuid4(), text="Take clopidogrel every morning")
        today = datetime.now(UTC).date()
        documentation = ReviewDocumentation(
            performed_on=today,
            delivery_method="face-to-face",
            recipient="beneficiary",
            provider_type="local-pharmacist",
            problems=(problem,),
            action_plan=(
                ActionPlanItem(
                    topic="Your stomach medicine and clopidogrel",
                    steps=("Ask Dr. Okafor about changing omeprazole to pantoprazole.",),
                    recommendation_id=to_prescriber.recommendation_id,
                ),
            ),
            medications=(
                PersonalMedication(
                    name="Clopidogrel 75 mg tablet",
                    ingredients=("clopidogrel",),
                    how_i_use_it="1 tablet by mouth every morning",
                    why_i_use_it="Keeps my heart stent open",
                    prescriber="Dr. Okafor",
                ),
                PersonalMedication(
                    name="Omeprazole 20 mg capsule",
                    ingredients=("omeprazole",),
                    how_i_use_it="1 capsule before breakfast",
                    why_i_use_it="Heartburn",
                ),
            ),
            allergies=("Penicillin (rash)",),
        )
        follow_up = FollowUpRequest(due=datetime.now(UTC) + timedelta(days=30), reason="Check heartburn")
        completion = CompleteReviewTask(
            task_id=task_id,
            recommendations=(to_prescriber, to_patient),
            documentation=documentation,
            follow_ups=(follow_up,),
        )
        bad = completion.model_copy(
            update={
                "documentation": documentation.model_copy(
                    update={"problems": (problem.model_copy(update={"alert": 3}),)}
                )
            }
        )
        assert (await ask(nc, COMPLETE_REVIEW_TASK, bad)).outcome == "invalid"  # the CMR task has no alert 3
        assert (await ask(nc, COMPLETE_REVIEW_TASK, completion)).ok

        # The member's papers: the action plan as the service gives it, rendered three ways.
        plan = ActionPlanDocument.model_validate(
            (await ask(nc, GET_ACTION_PLAN, GetActionPlan(patient_id=member))).data
        )
        assert plan.deliver_by == today + timedelta(days=14)
        assert [f.reason for f in plan.follow_ups] == ["Check heartburn"]
        pdf = render_pdf(plan, Letterhead(member_name="Ana Example", contact="555-0100"))
        text = " ".join(" ".join((page.extract_text() or "").split()) for page in PdfReader(io.BytesIO(pdf)).pages)
        for heading in STANDARD_HEADINGS:
            assert heading in text, heading
        assert "Keeps my heart stent open" in text and "Dear Ana Example:" in text
        assert "Clopidogrel" in text and "DailyMed" in text  # its plain-language education and the source
        html = render_html(plan)
        assert all(heading in html for heading in STANDARD_HEADINGS)
        check_bundle(action_plan_bundle(plan))

        # The prescriber answers the referral; the answer is the recommendation's outcome in review.
        async def referred():
            found = (await ask(nc, LIST_REFERRALS, ListReferrals(patient_id=member))).data
            return found or None

        referral = (await wait_for(referred, timeout_s=10))[0]
        # Answered once the request reached the log (the listing shows it as soon as referral recorded it).
        await wait_for(
            lambda: stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReferralRequested)), timeout_s=10
        )
        answer = AnswerReferral(referral_id=uuid.UUID(referral["referral_id"]), decision="accepted")
        assert (await ask(nc, ANSWER_REFERRAL, answer, actors.physician(PCP))).ok

        async def outcome_known():
            record = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=member))).data
            recs = {r["recommendation_id"]: r for r in record["recommendations"]}
            return record if recs[str(to_prescriber.recommendation_id)]["outcome"] == "accepted" else None

        record = await wait_for(outcome_known, timeout_s=10)
        by_id = {r["recommendation_id"]: r for r in record["recommendations"]}
        assert by_id[str(to_prescriber.recommendation_id)]["outcome_source"] == "prescriber"
        assert by_id[str(to_patient.recommendation_id)]["target"] == "patient"
        assert by_id[str(to_patient.recommendation_id)]["outcome"] is None
        assert record["member"]["enrolled"] is True
        assert [f["reason"] for f in record["follow_ups"]] == ["Check heartburn"]
        assert record["action_plans"][0]["delivered_on"] is None
        completed = next(t for t in record["tasks"] if t["task_id"] == str(task_id))
        assert completed["service"] == "cmr"  # what the CMS report counts

        # Everything mtm holds for the member, as one FHIR bundle whose references all resolve inside it.
        referrals = (await ask(nc, LIST_REFERRALS, ListReferrals(patient_id=member))).data
        bundle = patient_bundle(member, review_record=record, referrals=referrals, action_plan=plan)
        check_bundle(bundle)
        kinds = {entry["resource"]["resourceType"] for entry in bundle["entry"]}
        assert {"Patient", "Task", "DetectedIssue", "CarePlan", "List", "ServiceRequest", "Provenance"} <= kinds
        issues = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DetectedIssue"]
        assert any(m["action"]["coding"][0]["code"] == "5" for i in issues for m in i.get("mitigation", []))


async def test_an_override_silences_the_same_alert_until_its_drugs_change(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient = new_patient_id()
    async with run_service(review_app(settings_for)):
        await publish_event(nc, discharge(patient))
        first = (await wait_for(lambda: tasks_of(nc, patient), timeout_s=10))[0]
        override = OverrideAlert(
            task_id=uuid.UUID(first["task_id"]), alert=0, reason_code="will-monitor", reason="Cardiology aware"
        )
        assert (await ask(nc, OVERRIDE_ALERT, override)).ok
        assert (await ask(nc, OVERRIDE_ALERT, override)).ok  # a retry records nothing new
        await publish_event(nc, discharge(patient))  # the same drugs again
        await publish_event(nc, discharge(patient, omeprazole_mg=40))  # a dose change is relevant

        async def three():
            found = await tasks_of(nc, patient)
            return found if len(found) == 3 else None

        await wait_for(three, timeout_s=10)
        record = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=patient))).data
        tasks = sorted(record["tasks"], key=lambda t: t["created_at"])
        alerts = [t["task"]["alerts"][0] for t in tasks]
        assert alerts[0]["overridden_by"] and not alerts[0]["suppressed_by"]
        assert alerts[1]["suppressed_by"] == alerts[0]["overridden_by"]
        assert alerts[2]["suppressed_by"] is None and alerts[2]["overridden_by"] is None

        stats = (await ask(nc, LIST_ALERT_RULE_STATS, ListAlertRuleStats())).data
        rule = next(s for s in stats if s["rule"] == "test-clopidogrel-omeprazole")
        assert (rule["fired"], rule["overridden"]) == (3, 1)
        assert rule["override_rate"] == pytest.approx(1 / 3, abs=1e-3)


async def test_deadlines_fire_once_across_a_restart_and_two_replicas(clean_jetstream, settings_for, run_service):
    """A post-discharge review 8 days after discharge is overdue; a CMR done 20 days ago owes its summary."""
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    late, member = new_patient_id(), new_patient_id()
    settings = settings_for(ReviewSettings, review_timer_every_s=0.05)
    async with run_service(create_app(settings, checker=interaction_checker)):
        await publish_event(nc, discharge(late, days_ago=8))
        await publish_event(nc, mtm_enrolled(member))
        cmr = (await wait_for(lambda: tasks_of(nc, member, reason=CMR), timeout_s=10))[0]
        task_id = uuid.UUID(cmr["task_id"])
        assert (await ask(nc, CLAIM_REVIEW_TASK, ClaimReviewTask(task_id=task_id))).ok
        weeks_ago = ReviewDocumentation(
            performed_on=datetime.now(UTC).date() - timedelta(days=20), delivery_method="telephone"
        )
        assert (await ask(nc, COMPLETE_REVIEW_TASK, CompleteReviewTask(task_id=task_id, documentation=weeks_ago))).ok

    async def overdue_events():
        tasks = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskOverdue))
        plans = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ActionPlanOverdue))
        return (tasks, plans) if tasks and plans else None

    async with (
        run_service(create_app(settings, checker=interaction_checker)),
        run_service(create_app(settings, checker=interaction_checker)),
    ):
        await wait_for(overdue_events, timeout_s=10)
        await asyncio.sleep(0.5)  # both replicas keep looking
    async with run_service(create_app(settings, checker=interaction_checker)):
        await asyncio.sleep(0.5)  # a restarted service looks again
        escalated = (await tasks_of(nc, late))[0]
    tasks, plans = await overdue_events()
    fired = [ReviewTaskOverdue.model_validate_json(m.data) for m in tasks]
    assert [e.patient_id for e in fired] == [late]
    assert (fired[0].data.previous_priority, fired[0].data.priority) == ("asap", "stat")
    assert escalated["priority"] == "stat" and escalated["overdue"] is True
    assert [ActionPlanOverdue.model_validate_json(m.data).data.task_id for m in plans] == [task_id]


async def test_a_patients_record_comes_a_page_of_tasks_at_a_time(clean_jetstream, settings_for, run_service):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)
    patient = new_patient_id()
    async with run_service(review_app(settings_for)):
        for days_ago in (5, 4, 3, 2, 1):
            await publish_event(nc, discharge(patient, days_ago=days_ago))

        async def five():
            found = await tasks_of(nc, patient)
            return found if len(found) == 5 else None

        await wait_for(five, timeout_s=10)
        first = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=patient, limit=2))).data
        assert len(first["tasks"]) == 2 and first["next"] is not None
        pages, before = [first], first["next"]
        while before is not None:
            page = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=patient, limit=2, before=before))).data
            pages.append(page)
            before = page["next"]
        assert [len(p["tasks"]) for p in pages] == [2, 2, 1]
        created = [t["created_at"] for p in pages for t in p["tasks"]]
        assert created == sorted(created, reverse=True)  # newest first, across pages
        assert len({t["task_id"] for p in pages for t in p["tasks"]}) == 5
        whole = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=patient))).data
        assert len(whole["tasks"]) == 5 and whole["next"] is None  # the default page holds them all
        oldest = pages[-1]["tasks"][0]["task_id"]
        one = (await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=patient, task_id=oldest, limit=1))).data
        assert [t["task_id"] for t in one["tasks"]] == [oldest] and one["next"] is None  # a task page's part

        bad = await ask(nc, GET_REVIEW_RECORD, GetReviewRecord(patient_id=patient, before="1." + "-" * 36))
        assert bad.outcome == "invalid" and "before" in bad.message
