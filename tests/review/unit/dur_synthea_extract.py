"""Extract the DUR-relevant facts of the Synthea SMART R4 bundles into one compact JSON (test data).

Run once: uv run python tests/review/unit/dur_synthea_extract.py [bundle_dir] [out.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT_BUNDLES = Path("/work/shared/data/synthea-smart-r4-200/bundles")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "synthea_dur_extract.json"
LAB_CODES = {
    "egfr": {"33914-3", "62238-1", "98979-8"},
    "creatinine": {"2160-0", "38483-4"},
    "weight": {"29463-7"},
}


def _coding(concept: dict) -> dict:
    return (concept.get("coding") or [{}])[0]


def _latest_lab(observations: list[dict], codes: set[str]) -> dict | None:
    matching = [
        obs for obs in observations if _coding(obs.get("code", {})).get("code") in codes and "valueQuantity" in obs
    ]
    if not matching:
        return None
    latest = max(matching, key=lambda obs: obs.get("effectiveDateTime", ""))
    quantity = latest["valueQuantity"]
    return {
        "code": _coding(latest["code"])["code"],
        "value": quantity.get("value"),
        "unit": quantity.get("unit"),
        "effective": latest.get("effectiveDateTime"),
    }


def extract_bundle(bundle: dict) -> dict:
    resources: dict[str, list[dict]] = {}
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        resources.setdefault(resource["resourceType"], []).append(resource)
    patient = resources["Patient"][0]
    encounter_dates = [encounter.get("period", {}).get("start", "") for encounter in resources.get("Encounter", [])]
    medications = []
    for request in resources.get("MedicationRequest", []):
        if request.get("status") != "active":
            continue
        coding = _coding(request.get("medicationCodeableConcept", {}))
        medications.append({"rxnorm": coding.get("code"), "display": coding.get("display")})
    conditions = [
        {
            "system": _coding(condition["code"]).get("system"),
            "code": _coding(condition["code"]).get("code"),
            "text": _coding(condition["code"]).get("display") or condition["code"].get("text"),
            "clinical_status": _coding(condition.get("clinicalStatus", {})).get("code", "active"),
        }
        for condition in resources.get("Condition", [])
    ]
    allergies = [
        {
            "system": _coding(allergy["code"]).get("system"),
            "code": _coding(allergy["code"]).get("code"),
            "text": _coding(allergy["code"]).get("display") or allergy["code"].get("text"),
            "category": (allergy.get("category") or [None])[0],
        }
        for allergy in resources.get("AllergyIntolerance", [])
    ]
    observations = resources.get("Observation", [])
    return {
        "patient_id": patient["id"],
        "birth_date": patient.get("birthDate"),
        "sex": patient.get("gender", "unknown"),
        "reference_date": max(encounter_dates, default="")[:10] or None,
        "medications": medications,
        "conditions": conditions,
        "allergies": allergies,
        "labs": {kind: _latest_lab(observations, codes) for kind, codes in LAB_CODES.items()},
    }


def main(argv: list[str]) -> None:
    bundles = Path(argv[0]) if argv else DEFAULT_BUNDLES
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    patients = [extract_bundle(json.loads(path.read_text(encoding="utf-8"))) for path in sorted(bundles.glob("*.json"))]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(patients, indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(patients)} patients -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
