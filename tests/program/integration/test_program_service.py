"""The MTM program on real NATS and Postgres: a discharge and fills target and enrol a member (opt-out), adherence
is measured from the fills with the class that fell below 80 %, the member opts out, the CMS report shows it."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from support import actors
from support.events import new_patient_id, publish_event
from support.jetstream import stream_messages, wait_for
from support.services import native_discharge, native_fill

from mtm.contracts import (
    AdherenceMeasured,
    Alert,
    AlertOverridden,
    CommandReply,
    MedicationEntry,
    MtmDisenrolled,
    MtmEligibilityDetermined,
    MtmEnrolled,
    ReviewTaskCompleted,
    ReviewTaskCreated,
)
from mtm.contracts.clinical import Condition
from mtm.contracts.documentation import DrugTherapyProblem, ReviewDocumentation
from mtm.contracts.events import AlertOverride, ReviewTask, TaskCompletion
from mtm.contracts.program_commands import DisenrollMember, GetAlertReport, GetCmsReport, GetProgramStatus
from mtm.contracts.subjects import (
    DISCHARGE_INTAKE_SUBJECT,
    DISENROLL_MEMBER,
    FILL_INTAKE_SUBJECT,
    GET_ALERT_REPORT,
    GET_CMS_REPORT,
    GET_PROGRAM_STATUS,
    PATIENT_EVENTS_STREAM,
    event_filter,
)

pytestmark = pytest.mark.integration
DRUGS = ("Metformin 500 MG", "Lisinopril 10 MG", "Amlodipine 5 MG", "Aspirin 81 MG", "Levothyroxine 50 MCG",
         "Sertraline 50 MG", "Omeprazole 20 MG")  # fmt: skip


def discharge(patient_id: str):
    """Diabetes, hypertension, dyslipidemia and seven drugs at discharge; atorvastatin comes from the pharmacy."""
    event = native_discharge(patient_id)
    conditions = (
        Condition(system="http://hl7.org/fhir/sid/icd-10-cm", code="E11.9", text="Type 2 diabetes"),
        Condition(system="http://hl7.org/fhir/sid/icd-10-cm", code="I10", text="Hypertension"),
        Condition(system="http://hl7.org/fhir/sid/icd-10-cm", code="E78.5", text="Hyperlipidemia"),
    )
    medications = tuple(MedicationEntry(text=f"{name} Oral Tablet", frequency="QD") for name in DRUGS)
    data = event.data.model_copy(update={"conditions": conditions, "discharge_medications": medications})
    return event.model_copy(update={"data": data})


def statin_fill(patient_id: str, on: date):
    event = native_fill(patient_id)
    data = event.data.model_copy(
        update={
            "dispense_id": f"rx-{uuid.uuid4().hex[:8]}",
            "filled_on": on,
            "days_supply": 30,
            "medication": MedicationEntry(text="Atorvastatin 40 MG Oral Tablet"),
            "total_cost": None,  # no claim costs: the plan estimates per maintenance drug
        }
    )
    return event.model_copy(update={"id": uuid.uuid4(), "data": data})


async def request(nc, subject: str, body, headers=None) -> CommandReply:
    headers = headers or actors.pharmacist("rph-ana")
    reply = await nc.request(subject, body.model_dump_json().encode(), timeout=10, headers=headers)
    return CommandReply.model_validate_json(reply.data)


async def events_of(nc, cls, patient_id: str):
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(cls))
    return [e for e in (cls.model_validate_json(m.data) for m in found) if e.patient_id == patient_id]


async def test_a_member_is_targeted_enrolled_measured_and_opts_out(clean_jetstream, settings_for, run_service, infra):
    from mtm.cli import tool
    from mtm.program.bootstrap import create_app as program_app
    from mtm.program.settings import ProgramSettings
    from mtm.reconciliation.bootstrap import ReconciliationSettings
    from mtm.reconciliation.bootstrap import create_app as reconciliation_app

    nc = clean_jetstream
    patient = new_patient_id()
    today = datetime.now(UTC).date()
    program = program_app(settings_for(ProgramSettings, program_evaluation_every_s=0.1))
    async with run_service(reconciliation_app(settings_for(ReconciliationSettings))), run_service(program):
        js = nc.jetstream()
        event = discharge(patient)
        await js.publish(DISCHARGE_INTAKE_SUBJECT, event.model_dump_json().encode())
        # Seven drugs: not eligible yet (M = 8).
        first = await wait_for(lambda: _some(events_of(nc, MtmEligibilityDetermined, patient)), timeout_s=30)
        assert not first[0].data.eligible and first[0].data.trigger == "discharge"
        # Two statin fills 40 days apart with 30 days' supply: the eighth drug, and a gap.
        for on in (today - timedelta(days=40), today):
            await js.publish(FILL_INTAKE_SUBJECT, statin_fill(patient, on).model_dump_json().encode())
        enrolled = await wait_for(lambda: _some(events_of(nc, MtmEnrolled, patient)), timeout_s=30)
        measured = await wait_for(lambda: _some(events_of(nc, AdherenceMeasured, patient)), timeout_s=30)
        status = await request(nc, GET_PROGRAM_STATUS, GetProgramStatus(patient_id=patient))
        await record_cmr(nc, patient, today)
        alerts = await wait_for(lambda: _rules(request(nc, GET_ALERT_REPORT, GetAlertReport())), timeout_s=15)
        opt_out = DisenrollMember(patient_id=patient, program_year=today.year, reason="opted-out")
        left = await request(nc, DISENROLL_MEMBER, opt_out)
        again = await request(nc, DISENROLL_MEMBER, opt_out)
        physician = await request(nc, DISENROLL_MEMBER, opt_out, actors.physician("dr-house"))
        # What `mtm report cms` asks and writes, as the CLI's user.
        token = actors.token("rph-ana", "pharmacist", "rph-ana")
        cli = infra.nats_client("cli")
        report = await tool.request(cli, GET_CMS_REPORT, GetCmsReport(year=today.year), token=token)
        determinations = await events_of(nc, MtmEligibilityDetermined, patient)

    assert [e.data.program_year for e in enrolled] == [today.year] and enrolled[0].data.basis == (
        "chronic-diseases-drugs-cost"
    )
    eligible = [d for d in determinations if d.data.eligible]
    assert eligible and eligible[0].id == enrolled[0].data.eligibility_event_id
    assert eligible[0].data.trigger == "fill" and len(eligible[0].data.findings.maintenance_drugs) == 8
    # Each input was evaluated once: nothing is re-decided while nothing new arrives.
    assert len(determinations) <= 3

    latest = measured[-1].data
    statins = next(c for c in latest.classes if c.drug_class == "statins")
    assert statins.status == "measured" and statins.days_covered == 31 and statins.treatment_days == 41
    assert "statins" in latest.below_threshold
    # The class fell below 80 % once: one measurement says so (part B opens a targeted review from it).
    assert sum("statins" in m.data.newly_below for m in measured) == 1

    assert status.ok and status.data["eligible"] is True and status.data["fills"] == 2
    assert status.data["enrolments"][0]["program_year"] == today.year
    assert left.ok and again.outcome == "conflict" and physician.outcome == "forbidden"
    [disenrolled] = await events_of(nc, MtmDisenrolled, patient)
    assert disenrolled.data.reason == "opted-out" and disenrolled.data.actor.user_id == "rph-ana"

    assert report.ok
    [row] = [r for r in report.data["rows"] if r["beneficiary_id"] == patient]
    assert row["mtm_enrollment_date"] == today.isoformat() and row["opt_out_reason_code"] == "03"
    assert (row["offered_cmr"], row["received_cmr"], row["cmr_dates"]) == ("Y", "Y", today.isoformat())
    assert (row["cmr_delivery_method"], row["cmr_recipient"], row["cmr_provider_type"]) == (
        "telephone",
        "caregiver",
        "local-pharmacist",
    )
    # One alert acted on (a documented problem), one overridden: half the decided alerts were accepted.
    [rule] = [r for r in alerts if r["rule_id"] == "test-rule"]
    assert (rule["alerts"], rule["accepted"], rule["overridden"], rule["acceptance_rate"]) == (2, 1, 1, 0.5)
    assert report.data["summary"]["opted_out"] == {"opted-out": 1}
    out = io.StringIO()
    tool.write_csv(out, report.data["rows"], report.data["columns"])
    header, *lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert header[:3] == ["beneficiary_id", "date_of_birth", "contract_year"] and len(lines) == 1
    assert dict(zip(header, lines[0], strict=True))["opt_out_reason_code"] == "03"


async def record_cmr(nc, patient_id: str, today: date) -> None:
    """A CMR offered and done by telephone with a caregiver, one alert acted on and one overridden (review's
    events, as part B's review service records them)."""
    task_id = uuid.uuid4()
    alert = Alert(kind="interaction", severity="moderate", tier="passive", ingredients=("a", "b"), message="m",
                  source="test", rule_id="test-rule")  # fmt: skip
    created = ReviewTaskCreated.create(
        source="test",
        patient_id=patient_id,
        data=ReviewTask(
            task_id=task_id,
            reason="comprehensive-medication-review",
            priority="routine",
            focus_event_id=uuid.uuid4(),
            alerts=(alert, alert),
        ),
    )
    problem = DrugTherapyProblem(problem_id=uuid.uuid4(), category="adherence", detail="d", alert=0)
    completed = ReviewTaskCompleted.create(
        source="test",
        patient_id=patient_id,
        data=TaskCompletion(
            task_id=task_id,
            pharmacist_id="rph-ana",
            service="cmr",
            documentation=ReviewDocumentation(
                performed_on=today, delivery_method="telephone", recipient="caregiver", problems=(problem,)
            ),
        ),
    )
    overridden = AlertOverridden.create(
        source="test",
        patient_id=patient_id,
        data=AlertOverride(
            override_id=uuid.uuid4(),
            task_id=task_id,
            alert=1,
            rule_id="test-rule",
            kind="interaction",
            severity="moderate",
            ingredients=("a", "b"),
            reason_code="will-monitor",
            reason="monitored",
        ),
    )
    for event in (created, completed, overridden):
        await publish_event(nc, event)


async def _rules(reply):
    found = (await reply).data or []
    return found if any(r["overridden"] for r in found) else None


async def _some(found):
    items = await found
    return items or None
