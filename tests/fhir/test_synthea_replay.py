"""Synthea replay converter: every shipped patient becomes valid, deterministic transition-of-care bundles."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mtm.contracts.clinical import ListItemFlag
from mtm.fhir import parse_bundle
from mtm.fhir.synthea import KEPT_RESOURCE_TYPES, transitions_from_patient_bundle

pytestmark = pytest.mark.unit

BUNDLES = Path(__file__).resolve().parents[2] / "data" / "synthea" / "bundles"


@cache
def _patients() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(path.read_text(encoding="utf-8")) for path in sorted(BUNDLES.glob("*.json")))


@cache
def _transitions() -> tuple[dict[str, Any], ...]:
    return tuple(t for patient in _patients() for t in transitions_from_patient_bundle(patient))


def test_shipped_population_is_compact() -> None:
    patients = _patients()
    assert len(patients) == 200
    kinds = Counter(e["resource"]["resourceType"] for p in patients for e in p["entry"])
    assert set(kinds) <= KEPT_RESOURCE_TYPES | {"Observation"}
    assert kinds["Patient"] == 200


def test_every_patient_yields_transitions_of_the_right_kind() -> None:
    per_patient = [transitions_from_patient_bundle(p) for p in _patients()]
    kinds = Counter(t["meta"]["tag"][0]["code"] for ts in per_patient for t in ts)

    assert all(per_patient)
    assert kinds["inpatient-discharge"] > 0 and kinds["synthetic-transition"] > 0
    for transitions in per_patient:
        tags = {t["meta"]["tag"][0]["code"] for t in transitions}
        assert tags in ({"inpatient-discharge"}, {"synthetic-transition"})
        if tags == {"synthetic-transition"}:
            assert len(transitions) == 1
    print(f"\nSynthea replay: {len(per_patient)} patients, {sum(kinds.values())} transitions {dict(kinds)}")


def test_conversion_is_deterministic() -> None:
    patient = _patients()[0]

    assert transitions_from_patient_bundle(patient) == transitions_from_patient_bundle(json.loads(json.dumps(patient)))
    ids = [t["id"] for t in _transitions()]
    assert len(ids) == len(set(ids))


def test_every_transition_parses_with_both_lists() -> None:
    flags: Counter[str] = Counter()
    for transition in _transitions():
        toc = parse_bundle(transition)
        assert toc.encounter_id is not None and toc.discharged_at is not None
        assert toc.admitted_at is not None and toc.admitted_at <= toc.discharged_at
        assert all(m.list_flag is None for m in toc.home_medications)
        home_codes = {m.rxnorm_code for m in toc.home_medications}
        for entry in toc.discharge_medications:
            assert entry.list_flag is not None
            flags[entry.list_flag.value] += 1
            if entry.list_flag is ListItemFlag.UNCHANGED:
                assert entry.rxnorm_code in home_codes
            if entry.list_flag is ListItemFlag.CEASED:
                assert entry.status == "stopped" and entry.rxnorm_code in home_codes
            if entry.list_flag is ListItemFlag.PRESCRIBED:
                assert entry.rxnorm_code not in home_codes
        assert all(o.effective is None or o.effective <= toc.discharged_at for o in toc.observations)
    assert set(flags) == {"01", "04", "05"}
    print(f"\ndischarge flags: {dict(sorted(flags.items()))}")


def test_conditions_are_those_active_at_discharge() -> None:
    for transition in _transitions()[:40]:
        discharged = transition["timestamp"]
        for entry in transition["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Condition":
                assert resource["onsetDateTime"].replace("+00:00", "Z") <= discharged.replace("+00:00", "Z")
                assert resource["clinicalStatus"]["coding"][0]["code"] == "active"
