"""What a rebuild keeps in memory per patient: each unwritten state is handed back to be written exactly once."""

from __future__ import annotations

from mtm.platform.projection import Kept


def test_a_state_let_go_unwritten_is_handed_back_once_and_the_rest_at_the_end():
    kept = Kept(capacity=2)
    kept.put("a", "a1", unwritten=True)
    kept.put("b", "b1")  # written already (read back from the table)
    kept.put("a", "a2", unwritten=True)
    kept.put("c", "c1", unwritten=True)  # lets "b" go: it is in the table, nothing to write
    assert kept.take_let_go() == []
    kept.put("d", "d1", unwritten=True)  # lets "a" go with its latest state
    assert kept.get("a") is None
    assert kept.take_let_go() == ["a2"]
    assert kept.take_let_go() == []
    assert kept.take_unwritten() == ["c1", "d1"]
    assert kept.take_unwritten() == []
    assert kept.get("d") == "d1"  # still kept, to be folded on


def test_a_forgotten_patient_is_never_written():
    kept = Kept(capacity=1)
    kept.put("a", "a1", unwritten=True)
    kept.forget("a")
    kept.put("b", "b1", unwritten=True)
    kept.put("c", "c1", unwritten=True)
    assert kept.take_unwritten() == ["b1", "c1"]


def test_unwritten_states_let_go_come_before_the_kept_ones_in_patient_order():
    kept = Kept(capacity=2)
    for patient in ("z", "y", "x"):
        kept.put(patient, patient.upper(), unwritten=True)
    assert kept.take_unwritten() == ["Z", "X", "Y"]
