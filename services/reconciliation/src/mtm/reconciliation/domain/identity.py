"""When two discharges are the same discharge: the rules that keep one encounter from being reviewed twice."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mtm.contracts.events import TransitionOfCare


def discharge_digest(transition: TransitionOfCare) -> str:
    """What the discharge says, independent of the ids and times of the message that carried it."""
    return digest_of_json(transition.model_dump_json())


def digest_of_json(transition_json: str) -> str:
    """`discharge_digest` of a discharge whose JSON (its `model_dump_json`) is in hand already."""
    return hashlib.sha256(transition_json.encode()).hexdigest()


@dataclass(frozen=True)
class Recorded:
    """A discharge already on the log under some id."""

    patient_id: str
    digest: str


def id_reused_for_another_discharge(recorded: Recorded | None, patient_id: str, digest: str) -> str | None:
    """Why a discharge must be refused because its id already names a different one (None: it may go on).

    The same id with the same content is a resend and changes nothing; the same id for another patient or for
    different content would otherwise be taken for a resend and silently lost.
    """
    if recorded is None or (recorded.patient_id == patient_id and recorded.digest == digest):
        return None
    if recorded.patient_id != patient_id:
        return "id: this event id was already used for a discharge of another patient; send it with a new id"
    return "id: this event id was already used for a different discharge of this patient; send it with a new id"
