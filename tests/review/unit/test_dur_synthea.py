"""Run the DUR engine over all 200 Synthea patients and report the alert burden (print with -s)."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from review.unit.dur_support import synthea_patients

from mtm.review.domain.dur import check
from mtm.review.knowledge import load_bundled

pytestmark = pytest.mark.unit


def test_engine_runs_on_all_200_synthea_patients_and_reports_alert_burden() -> None:
    kb = load_bundled()
    patients = synthea_patients()
    assert len(patients) == 200
    per_patient: list[Counter[str]] = []
    findings_per_patient: list[int] = []
    by_kind: Counter[str] = Counter()
    for patient_id, context, medications in patients:
        alerts = check(context, medications, kb)
        assert alerts == check(context, medications, kb)
        for alert in alerts:
            assert alert.source and alert.message and alert.rule_id
            assert patient_id not in alert.message
        per_patient.append(Counter(alert.severity for alert in alerts))
        findings_per_patient.append(sum(1 for alert in alerts if alert.kind != "unresolved"))
        by_kind.update(f"{alert.kind}/{alert.severity}" for alert in alerts)

    print("\nDUR alert burden on 200 Synthea patients (alerts per patient)")
    for severity in ("high", "moderate", "low"):
        counts = [patient[severity] for patient in per_patient]
        print(
            f"  {severity:<8} mean {statistics.mean(counts):.2f}  median {statistics.median(counts):g}  "
            f"max {max(counts)}  patients with any {sum(1 for count in counts if count)}"
        )
    totals = [sum(patient.values()) for patient in per_patient]
    print(f"  {'all':<8} mean {statistics.mean(totals):.2f}  median {statistics.median(totals):g}  max {max(totals)}")
    print(
        f"  {'findings':<8} mean {statistics.mean(findings_per_patient):.2f}  "
        f"median {statistics.median(findings_per_patient):g}  max {max(findings_per_patient)}  "
        "(all kinds except unresolved missing-data notes)"
    )
    print("  by kind/severity: " + ", ".join(f"{key} {count}" for key, count in sorted(by_kind.items())))
