"""The contracts' limits keep every valid input within what the log keeps for one event, and refuse what is beyond
them by name.

In plain text the largest inputs and everything they cause fit one NATS message; in multi-byte text, sealed, a
documented review outgrows it and the log keeps its body in the object store (`mtm.platform.bodies`), which takes
up to `MAX_STORED_BODY_BYTES` per event: the largest valid input in four-byte characters stays far below that.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mtm.contracts import (
    Alert,
    Allergy,
    CareTeam,
    Condition,
    MedicationEntry,
    Observation,
    PatientDemographics,
    TransitionOfCareRecorded,
)
from mtm.contracts.events import TransitionOfCare
from mtm.contracts.limits import (
    MAX_ALERTS,
    MAX_ALLERGIES,
    MAX_CONDITIONS,
    MAX_MEDICATIONS,
    MAX_OBSERVATIONS,
    MAX_TEXT,
)

pytestmark = pytest.mark.unit
# The server's default max payload, less room for headers: what one message may carry.
ONE_MESSAGE = 1024 * 1024 - 16 * 1024
NAMES = ("Atorvastatin", "Lisinopril", "Metformin", "Warfarin", "Amiodarone", "Sertraline", "Tramadol", "Apixaban")


def _medication(side: str, n: int) -> MedicationEntry:
    # Each entry as long as the contract lets it be, and the lists mostly different, so every item and most
    # discrepancies carry two full entries: the largest reconciliation the limits allow.
    text = f"{NAMES[n % len(NAMES)]} {n} MG Oral Tablet "
    return MedicationEntry(
        entry_id=f"{side}{n}".ljust(128, "0"),
        text=text.ljust(MAX_TEXT, "x"),
        dose_value=n,
        dose_unit="mg",
        frequency="every 12 hours as needed for pain",
        route="oral",
        status_reason="r" * MAX_TEXT,
    )


def largest_discharge() -> TransitionOfCareRecorded:
    data = TransitionOfCare(
        patient=PatientDemographics(patient_id="p-" + "9" * 62, sex="female"),
        encounter_id="e" * 128,
        facility="f" * 256,
        care_team=CareTeam(attending_physician_id="a" * 64, primary_care_physician_id="b" * 64),
        home_medications=tuple(_medication("h", n) for n in range(MAX_MEDICATIONS)),
        discharge_medications=tuple(_medication("d", n + 3) for n in range(MAX_MEDICATIONS)),
        conditions=tuple(Condition(text="c" * MAX_TEXT, code="I10", system="s" * 256) for _ in range(MAX_CONDITIONS)),
        allergies=tuple(Allergy(text="a" * MAX_TEXT, code="x" * 64) for _ in range(MAX_ALLERGIES)),
        observations=tuple(
            Observation(text="o" * MAX_TEXT, value=1.5, unit="mg/dL", value_text="v" * MAX_TEXT)
            for _ in range(MAX_OBSERVATIONS)
        ),
    )
    return TransitionOfCareRecorded.create(source="test", patient_id=data.patient.patient_id, data=data)


def test_the_largest_valid_discharge_and_everything_it_causes_fit_in_one_message() -> None:
    from mtm.reconciliation.application import reconcile_now
    from mtm.review.application import open_review_task

    def check(rec):
        # As many alerts as a long list could raise, each with a long message: the review task must still fit.
        alerts = [
            Alert(
                kind="interaction",
                severity="low",
                tier="passive",
                ingredients=("a", "b"),
                message="m" * 400,
                source="s" * 200,
                rule_id=f"r{n}",
            )
            for n in range(MAX_ALERTS)
        ]
        return alerts, "urgent"

    discharge = largest_discharge()
    (reconciled,) = reconcile_now(discharge)
    (task,) = open_review_task(reconciled, check=check)
    sizes = {type(e).__name__: len(e.model_dump_json().encode()) for e in (discharge, reconciled, task)}
    assert all(size < ONE_MESSAGE for size in sizes.values()), sizes
    assert len(reconciled.data.items) >= MAX_MEDICATIONS


def largest_documented_review(char: str = "r"):
    """A CMR documented to every limit (problems, action plan, medication list, recommendations, follow-ups), its
    free text written in `char`."""
    import uuid
    from datetime import UTC, date, datetime

    from mtm.contracts import Recommendation, ReviewTaskCompleted
    from mtm.contracts.documentation import (
        ActionPlanItem,
        DrugTherapyProblem,
        Mitigation,
        PersonalMedication,
        ReviewDocumentation,
    )
    from mtm.contracts.events import TaskCompletion
    from mtm.contracts.limits import (
        MAX_MITIGATIONS,
        MAX_NOTE,
        MAX_PLAN_ITEMS,
        MAX_PLAN_STEPS,
        MAX_PML,
        MAX_PROBLEMS,
        MAX_RECOMMENDATION,
        MAX_RECOMMENDATIONS,
        MAX_REMARK,
    )

    remark = char * MAX_REMARK
    documentation = ReviewDocumentation(
        performed_on=date(2026, 11, 30),
        delivery_method="telephone",
        problems=tuple(
            DrugTherapyProblem(
                problem_id=uuid.uuid4(),
                category="adherence",
                detail=char * MAX_RECOMMENDATION,
                ingredients=tuple("i" * 100 for _ in range(10)),
                rule_id="x" * MAX_TEXT,
                mitigations=tuple(Mitigation(action="10", on=date(2026, 11, 30), note=remark) for _ in range(10)),
            )
            for _ in range(MAX_PROBLEMS)
        ),
        action_plan=tuple(
            ActionPlanItem(topic="t" * MAX_TEXT, steps=(remark,) * MAX_PLAN_STEPS, recommendation_id=uuid.uuid4())
            for _ in range(MAX_PLAN_ITEMS)
        ),
        medications=tuple(
            PersonalMedication(
                name="n" * MAX_TEXT,
                ingredients=tuple("i" * 100 for _ in range(10)),
                rxnorm_code="1234567890",
                how_i_use_it=remark,
                why_i_use_it=remark,
                prescriber="p" * MAX_TEXT,
                started=date(2020, 1, 1),
                stopped=date(2026, 1, 1),
                why_stopped=remark,
            )
            for _ in range(MAX_PML)
        ),
        allergies=tuple("a" * MAX_TEXT for _ in range(MAX_ALLERGIES)),
    )
    recommendations = tuple(
        Recommendation(
            recommendation_id=uuid.uuid4(),
            text=char * MAX_RECOMMENDATION,
            ingredients=tuple("i" * 100 for _ in range(20)),
            problem_id=uuid.uuid4(),
        )
        for _ in range(MAX_RECOMMENDATIONS)
    )
    completion = TaskCompletion(
        task_id=uuid.uuid4(),
        pharmacist_id="p" * 128,
        note=char * MAX_NOTE,
        recommendations=recommendations,
        documentation=documentation,
        care_team=CareTeam(attending_physician_id="a" * 64, primary_care_physician_id="b" * 64),
    )
    assert MAX_MITIGATIONS == 10
    return ReviewTaskCompleted.create(source="test", patient_id="p" * 64, data=completion, time=datetime.now(UTC))


def test_the_largest_documented_review_fits_in_one_message() -> None:
    size = len(largest_documented_review().model_dump_json().encode())
    assert size < ONE_MESSAGE, size


def test_the_largest_documented_review_in_four_byte_characters_sealed_is_kept_by_the_log() -> None:
    """It does not fit one message (so the log keeps its body in the object store), and that keeps it easily."""
    from mtm.platform.bodies import MAX_STORED_BODY_BYTES
    from mtm.platform.crypto import PatientKey, seal

    event = largest_documented_review("\U0001d11e")
    sealed = seal(event.model_dump_json().encode(), event.id, PatientKey.new())
    assert ONE_MESSAGE < len(sealed) < MAX_STORED_BODY_BYTES // 4, len(sealed)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("home_medications", [MedicationEntry(text="Aspirin 81 MG Oral Tablet")] * (MAX_MEDICATIONS + 1)),
        ("conditions", [Condition(text="Hypertension")] * (MAX_CONDITIONS + 1)),
        ("care_team", {"primary_care_physician_id": "dr house\n"}),
    ],
)
def test_beyond_the_limits_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        TransitionOfCare.model_validate({"patient": {"patient_id": "p1"}, field: value})
    assert any(error["loc"][0] == field for error in caught.value.errors())


def test_a_medication_text_beyond_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="at most 200 characters"):
        MedicationEntry(text="x" * (MAX_TEXT + 1))


def test_a_task_keeps_the_most_severe_alerts_and_says_how_many_it_left_out() -> None:
    from mtm.review.drug_checks import within_limit

    low = [Alert(kind="interaction", severity="low", tier="passive", ingredients=(), message="l", source="s")] * 400
    high = Alert(kind="interaction", severity="high", tier="interruptive", ingredients=(), message="h", source="s")
    kept = within_limit([*low, high])
    assert len(kept) == MAX_ALERTS
    assert kept[0] == high
    assert kept[-1].rule_id == "mtm.alerts-left-out" and "102 further" in kept[-1].message
    assert within_limit(low[:3]) == low[:3]
