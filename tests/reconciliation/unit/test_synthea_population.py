"""The whole shipped Synthea population replays through parse_bundle and reconcile without an error."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from mtm.fhir import parse_bundle
from mtm.fhir.synthea import transitions_from_patient_bundle
from mtm.reconciliation.domain import apply_to_medication_list, reconcile

pytestmark = pytest.mark.unit

BUNDLES = Path(__file__).resolve().parents[3] / "data" / "synthea" / "bundles"


def test_every_synthea_transition_reconciles() -> None:
    unresolved: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    discrepancies: Counter[str] = Counter()
    transitions = 0
    elapsed = 0.0
    for path in sorted(BUNDLES.glob("*.json")):
        medication_list = None
        for transition in transitions_from_patient_bundle(json.loads(path.read_text(encoding="utf-8"))):
            started = time.perf_counter()
            rec = reconcile(parse_bundle(transition), uuid.UUID(transition["id"]))
            elapsed += time.perf_counter() - started
            transitions += 1
            medication_list = apply_to_medication_list(
                medication_list, rec, event_id=uuid.UUID(transition["id"]), recorded_at=rec.discharged_at
            )
            for item in rec.items:
                statuses[item.status] += 1
                if not item.resolved:
                    unresolved[item.current.text] += 1
            discrepancies.update(d.type for d in rec.discrepancies)
    assert transitions >= 200
    # The converter flags every change; only Synthea's own overlapping orders (two strengths of one drug
    # active together) remain, as duplications.
    assert set(discrepancies) <= {"duplication"}
    print(
        f"\n{transitions} transitions, {elapsed / transitions * 1000:.1f} ms per parse_bundle + reconcile;"
        f" items {dict(statuses)}; discrepancies {dict(discrepancies)}; unresolved {sum(unresolved.values())}"
    )
    for text, count in unresolved.most_common():
        print(f"  unresolved x{count}: {text}")
