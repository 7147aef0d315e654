"""The JSON shape `mtm reconcile FILE` prints."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from reconciliation.unit.toc_builders import med, toc_bundle

from mtm.fhir import parse_bundle
from mtm.reconciliation.domain import reconcile, reconcile_to_report

pytestmark = pytest.mark.unit


def test_report_shape() -> None:
    rec = reconcile(
        parse_bundle(
            toc_bundle(
                [med("Lisinopril 10 MG Oral Tablet", rxnorm="314076", dose=1, unit="tablet", timing="daily")],
                [med("Lisinopril 20 MG Oral Tablet", dose=1, unit="tablet", timing="daily")],
            )
        ),
        uuid.uuid4(),
    )

    report = reconcile_to_report(rec)

    assert json.loads(json.dumps(report)) == report
    assert report == {
        "patient": "p1",
        "items": [
            {
                "ingredients": ["lisinopril"],
                "status": "changed",
                "changes": ["dose"],
                "documented": False,
                "home": {
                    "text": "Lisinopril 10 MG Oral Tablet",
                    "rxnorm_code": "314076",
                    "dose_value": 1.0,
                    "dose_unit": "tablet",
                    "frequency": "daily",
                    "status": "active",
                },
                "discharge": {
                    "text": "Lisinopril 20 MG Oral Tablet",
                    "dose_value": 1.0,
                    "dose_unit": "tablet",
                    "frequency": "daily",
                    "status": "active",
                },
            }
        ],
        "discrepancies": [
            {
                "type": "dose",
                "ingredients": ["lisinopril"],
                "documented": False,
                "home": report["items"][0]["home"],
                "discharge": report["items"][0]["discharge"],
                "message": (
                    "Lisinopril: dose per administration 10 mg lisinopril at home, 20 mg lisinopril at discharge; "
                    "no change is documented."
                ),
            }
        ],
    }


DATA = Path(__file__).resolve().parents[1] / "data"


def test_golden_file_report() -> None:
    """`discharge_mixed.json` holds every item status and discrepancy type; its report is reviewed and frozen."""
    raw = (DATA / "discharge_mixed.json").read_bytes()
    expected = json.loads((DATA / "discharge_mixed.report.json").read_text(encoding="utf-8"))

    report = reconcile_to_report(reconcile(parse_bundle(raw), uuid.UUID(int=1)))

    assert report == expected
    assert {i["status"] for i in report["items"]} == {"continued", "changed", "new", "stopped"}
    assert {d["type"] for d in report["discrepancies"]} == {
        "omission",
        "dose",
        "frequency",
        "route",
        "formulation",
        "duplication",
        "commission",
    }
