"""Builders of contract events for tests, and publishing them the way a producer does."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from nats.aio.client import Client
from nats.js.api import PubAck

from mtm.contracts import (
    CareTeam,
    Discrepancy,
    EventEnvelope,
    MedicationEntry,
    MedicationsReconciled,
    PatientDemographics,
    Recommendation,
    ReconciledItem,
    ReferralRequested,
    ReviewTaskCompleted,
)
from mtm.contracts.events import Reconciliation, TaskCompletion
from mtm.contracts.program import (
    AdherenceMeasured,
    AdherenceMeasurement,
    ClassAdherence,
    Enrolment,
    MtmEnrolled,
)
from mtm.contracts.subjects import event_subject

SAMPLES = Path(__file__).resolve().parents[2] / "contracts" / "samples"


def new_patient_id() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def sample_discharge(patient_id: str, physician: str = "prac-pcp-42") -> bytes:
    """The golden sample for a new patient and primary-care physician: atorvastatin taken at home is missing at
    discharge."""
    body = json.loads((SAMPLES / "transition_of_care_recorded.v1.json").read_text())
    event_id = str(uuid.uuid4())
    body.update(id=event_id, correlation_id=event_id, subject=f"Patient/{patient_id}")
    body["data"]["patient"]["patient_id"] = patient_id
    body["data"]["care_team"]["primary_care_physician_id"] = physician
    return json.dumps(body).encode()


def review_task_completed(
    patient_id: str, *, physician: str | None = "dr-house", recommendations: int = 1, pharmacist: str = "rph-1"
) -> ReviewTaskCompleted:
    for_prescriber = [
        Recommendation(
            recommendation_id=uuid.uuid4(),
            text=f"Restart home medication #{i}",
            action="start",
            ingredients=("atorvastatin",),
            needs_prescriber=True,
        )
        for i in range(recommendations)
    ]
    counselling = Recommendation(
        recommendation_id=uuid.uuid4(), text="Counsel on adherence", action="educate", needs_prescriber=False
    )
    recs = (*for_prescriber, counselling)
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


def referral_requested(patient_id: str, *, physician: str = "dr-house") -> ReferralRequested:
    from mtm.contracts.events import Referral

    return ReferralRequested.create(
        source="test",
        patient_id=patient_id,
        data=Referral(
            referral_id=uuid.uuid4(),
            task_id=uuid.uuid4(),
            physician_id=physician,
            pharmacist_id="rph-1",
            recommendation=Recommendation(
                recommendation_id=uuid.uuid4(),
                text="Restart atorvastatin 40 mg daily",
                action="start",
                ingredients=("atorvastatin",),
                needs_prescriber=True,
            ),
        ),
    )


def medications_reconciled(patient_id: str, *, omitted: str = "atorvastatin") -> MedicationsReconciled:
    home = MedicationEntry(text=f"{omitted.title()} 40 MG Oral Tablet", dose_value=40, dose_unit="mg", frequency="QD")
    return MedicationsReconciled.create(
        source="test",
        patient_id=patient_id,
        data=Reconciliation(
            transition_event_id=uuid.uuid4(),
            patient=PatientDemographics(patient_id=patient_id),
            care_team=CareTeam(primary_care_physician_id="dr-house", attending_physician_id="dr-ward"),
            items=(ReconciledItem(ingredients=(omitted,), status="stopped", home=home),),
            discrepancies=(
                Discrepancy(
                    type="omission",
                    ingredients=(omitted,),
                    home=home,
                    message=f"{omitted} taken at home is missing at discharge with no documented stop",
                ),
            ),
        ),
    )


def warfarin_and_simvastatin_continued(patient_id: str) -> MedicationsReconciled:
    """A discharge two days ago that continued warfarin 5 mg and simvastatin 20 mg daily: the list a later fill of an
    interacting drug is checked against."""

    def continued(name: str, mg: int) -> ReconciledItem:
        entry = MedicationEntry(
            text=f"{name.title()} {mg} MG Oral Tablet", dose_value=mg, dose_unit="mg", frequency="QD"
        )
        return ReconciledItem(ingredients=(name,), status="continued", home=entry, discharge=entry, route="oral")

    return MedicationsReconciled.create(
        source="test",
        patient_id=patient_id,
        data=Reconciliation(
            transition_event_id=uuid.uuid4(),
            patient=PatientDemographics(patient_id=patient_id),
            discharged_at=datetime.now(UTC) - timedelta(days=2),
            care_team=CareTeam(primary_care_physician_id="dr-okafor"),
            items=(continued("warfarin", 5), continued("simvastatin", 20)),
        ),
    )


def mtm_enrolled(patient_id: str, *, on: date | None = None) -> MtmEnrolled:
    """The program's opt-out enrolment of a targeted member (what part of mtm that targets would publish)."""
    on = on or datetime.now(UTC).date()
    return MtmEnrolled.create(
        source="test",
        patient_id=patient_id,
        data=Enrolment(
            program_year=on.year,
            enrolled_on=on,
            criteria_met_on=on,
            basis="chronic-diseases-drugs-cost",
            eligibility_event_id=uuid.uuid4(),
        ),
    )


def adherence_measured(patient_id: str, *, pdc: float = 0.72) -> AdherenceMeasured:
    """Statin adherence measured below 80% for the first time this year."""
    today = datetime.now(UTC).date()
    statins = ClassAdherence(drug_class="statins", status="measured", pdc=pdc, days_covered=236, treatment_days=328)
    low = ("statins",) if pdc < 0.8 else ()
    return AdherenceMeasured.create(
        source="test",
        patient_id=patient_id,
        data=AdherenceMeasurement(
            measurement_year=today.year, period_end=today, classes=(statins,), below_threshold=low, newly_below=low
        ),
    )
