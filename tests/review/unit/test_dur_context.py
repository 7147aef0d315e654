"""Building DUR inputs from a reconciliation, kidney function, and review-task priority."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from mtm.contracts import Alert, Allergy, Condition, MedicationEntry, Observation, PatientDemographics
from mtm.contracts.events import IngredientDose, ReconciledItem, Reconciliation
from mtm.review.domain.dur import PatientContext, check, context_from_reconciliation, priority_from
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit

DISCHARGED = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _obs(code: str, text: str, value: float | None = None, unit: str | None = None, **extra: object) -> Observation:
    return Observation(code=code, text=text, value=value, unit=unit, **extra)  # type: ignore[arg-type]


def _reconciliation(items: tuple[ReconciledItem, ...], observations: tuple[Observation, ...] = ()) -> Reconciliation:
    return Reconciliation(
        transition_event_id=uuid.uuid4(),
        patient=PatientDemographics(patient_id="p-1", birth_date=date(1950, 6, 1), sex="female"),
        discharged_at=DISCHARGED,
        items=items,
        conditions=(Condition(text="Heart failure"),),
        allergies=(Allergy(text="Penicillin"),),
        observations=observations,
    )


def _item(name: str, status: str, *, home: bool = True, discharge: bool = True, **extra: object) -> ReconciledItem:
    entry = MedicationEntry(text=f"{name} tablet")
    return ReconciledItem(
        ingredients=(name,),
        status=status,  # type: ignore[arg-type]
        home=entry if home else None,
        discharge=entry if discharge else None,
        **extra,  # type: ignore[arg-type]
    )


def test_context_from_reconciliation_reads_labs_genomics_and_current_items() -> None:
    observations = (
        _obs("2160-0", "Creatinine", 1.2, "mg/dL", effective=datetime(2026, 3, 1, tzinfo=UTC)),
        _obs("2160-0", "Creatinine", 150, "umol/L", effective=datetime(2026, 3, 9, tzinfo=UTC)),
        _obs("29463-7", "Body weight", 154, "[lb_av]"),
        _obs("LA-PGX", "CYP2C19 phenotype", value_text="Poor metabolizer"),
        _obs("LA-HLA", "HLA-B*57:01", value_text="Positive"),
    )
    items = (
        _item("warfarin", "continued"),
        _item("ibuprofen", "stopped", discharge=False),
        _item(
            "methotrexate",
            "new",
            home=False,
            frequency_per_day=1,
            route="oral",
            ingredient_doses=(IngredientDose(ingredient="methotrexate", amount=2.5, unit="mg", daily_amount=2.5),),
        ),
    )
    context, medications = context_from_reconciliation(_reconciliation(items, observations))
    assert context.age_years == 75
    assert context.sex == "female"
    assert context.egfr is None
    assert context.serum_creatinine_mg_dl == pytest.approx(150 / 88.4)
    assert context.weight_kg == pytest.approx(154 * 0.4536)
    assert dict(context.pgx) == {"CYP2C19": "poor metabolizer"}
    assert dict(context.hla) == {"HLA-B*57:01": "positive"}
    assert [m.ingredients for m in medications] == [("warfarin",), ("methotrexate",)]
    methotrexate = medications[1]
    assert dict(methotrexate.daily_amounts) == {"methotrexate": (2.5, "mg")}
    assert methotrexate.frequency_per_day == 1 and methotrexate.route == "oral"
    assert context.kidney_function() is not None


def test_latest_egfr_wins_over_creatinine() -> None:
    observations = (
        _obs("62238-1", "eGFR", 70, effective=datetime(2025, 1, 1, tzinfo=UTC)),
        _obs("33914-3", "eGFR", 28, effective=datetime(2026, 3, 9, tzinfo=UTC)),
        _obs("2160-0", "Creatinine", 0.8, "mg/dL"),
    )
    context, _ = context_from_reconciliation(_reconciliation((), observations))
    assert context.egfr == 28
    kidney = context.kidney_function("egfr")
    assert kidney is not None and kidney.value == 28 and "eGFR" in kidney.label


def test_without_a_discharge_list_home_items_are_the_current_list() -> None:
    items = (_item("warfarin", "stopped", discharge=False), _item("digoxin", "stopped", discharge=False))
    _, medications = context_from_reconciliation(_reconciliation(items))
    assert [m.ingredients for m in medications] == [("warfarin",), ("digoxin",)]


def test_unresolved_item_stays_unresolved() -> None:
    item = ReconciledItem(ingredients=(), status="new", discharge=MedicationEntry(text="mystery"), resolved=False)
    context, medications = context_from_reconciliation(_reconciliation((item,)))
    alerts = check(context, medications, load_bundled())
    assert [alert.kind for alert in alerts] == ["unresolved"]


def test_cockcroft_gault() -> None:
    male = PatientContext(age_years=80, sex="male", weight_kg=70, serum_creatinine_mg_dl=1.0)
    female = PatientContext(age_years=80, sex="female", weight_kg=70, serum_creatinine_mg_dl=1.0)
    assert male.kidney_function().value == pytest.approx(60 * 70 / 72)  # type: ignore[union-attr]
    assert female.kidney_function().value == pytest.approx(60 * 70 / 72 * 0.85)  # type: ignore[union-attr]
    assert PatientContext(age_years=80, serum_creatinine_mg_dl=1.0).kidney_function() is None
    # Adjusted body weight needs height; above 120% of ideal weight it replaces actual weight.
    assert (
        PatientContext(age_years=80, sex="male", weight_kg=120, serum_creatinine_mg_dl=1.0).kidney_function(
            "crcl", "adjusted"
        )
        is None
    )
    tall = PatientContext(age_years=80, sex="male", weight_kg=120, height_cm=180, serum_creatinine_mg_dl=1.0)
    ideal = 50 + 0.9 * (180 - 152.4)
    adjusted = tall.kidney_function("crcl", "adjusted")
    assert adjusted is not None and "adjusted body weight" in adjusted.label
    assert adjusted.value == pytest.approx(60 * (ideal + 0.4 * (120 - ideal)) / 72)


def test_ckd_epi_2021() -> None:
    # Inker LA et al. N Engl J Med 2021;385:1737: female 60 y, creatinine 1.0 mg/dL -> about 64.
    kidney = PatientContext(age_years=60, sex="female", serum_creatinine_mg_dl=1.0).kidney_function("egfr")
    assert kidney is not None and kidney.value == pytest.approx(142 * (1 / 0.7) ** -1.2 * 0.9938**60 * 1.012)
    assert 60 < kidney.value < 68


def _alert(severity: str, tier: str) -> Alert:
    return Alert(
        kind="interaction",
        severity=severity,  # type: ignore[arg-type]
        tier=tier,  # type: ignore[arg-type]
        ingredients=("a", "b"),
        message="m",
        source="s",
    )


@pytest.mark.parametrize(
    ("alerts", "discrepancies", "expected"),
    [
        ([], 0, "routine"),
        ([_alert("low", "passive")], 0, "routine"),
        ([_alert("low", "passive")], 1, "urgent"),
        ([_alert("moderate", "passive")], 0, "urgent"),
        ([_alert("high", "passive")], 0, "urgent"),
        ([_alert("high", "interruptive"), _alert("low", "passive")], 0, "asap"),
    ],
)
def test_priority_from(alerts: list[Alert], discrepancies: int, expected: str) -> None:
    assert priority_from(alerts, discrepancies) == expected


def test_patient_states_and_the_dose_as_written_reach_the_checks() -> None:
    pregnant = _obs("82810-3", "Pregnancy status", value_text="Pregnant", effective=datetime(2026, 3, 9, tzinfo=UTC))
    levothyroxine = MedicationEntry(text="Levothyroxine Sodium 100 MCG Oral Tablet", dose_value=100, dose_unit="mg")
    items = (
        _item("warfarin", "continued"),
        ReconciledItem(
            ingredients=("levothyroxine",),
            status="continued",
            home=levothyroxine,
            discharge=levothyroxine,
            frequency_per_day=1,
            ingredient_doses=(IngredientDose(ingredient="levothyroxine", amount=100, unit="mg", daily_amount=100),),
        ),
    )
    context, medications = context_from_reconciliation(_reconciliation(items, (pregnant,)))
    assert context.answers == {"82810-3": "pregnant"}
    assert medications[1].strengths == {"levothyroxine": (100.0, "mcg")}
    assert (medications[1].dose_value, medications[1].dose_unit) == (100, "mg")
    rules = {alert.rule_id for alert in check(context, medications, load_bundled())}
    assert {"lbl.warfarin.pregnancy", "plaus.unit_slip"} <= rules
