"""`mtm` for the patient's medication list and the physician's referrals: `medlist`, `referrals`, `answer`."""

from __future__ import annotations

import uuid
from typing import Any, get_args

import rich_click as click

from mtm.cli import output
from mtm.cli.output import json_option
from mtm.cli.params import PATIENT, PRACTITIONER, REFERRAL
from mtm.cli.reviews import build, send
from mtm.contracts import AnswerReferral, CommandReply, GetMedicationList, ListReferrals
from mtm.contracts.events import ReferralDecision
from mtm.contracts.subjects import ANSWER_REFERRAL, GET_MEDICATION_LIST, LIST_REFERRALS


def _medication_table(reply: CommandReply) -> None:
    data: dict[str, Any] = reply.data if isinstance(reply.data, dict) else {}
    rows = []
    for entry in output.rows_of(data, "entries"):
        last = (entry.get("provenance") or [{}])[-1]
        rows.append(
            (
                entry.get("medication", {}).get("text"),
                entry.get("ingredients"),
                last.get("status"),
                last.get("changes"),
                last.get("documented"),
                entry.get("unresolved_omission"),
                entry.get("last_filled_on"),
                last.get("source"),
            )
        )
    columns = ("Medication", "Ingredients", "Status", "Changes", "Documented", "Unresolved omission")
    output.table((*columns, "Last filled", "From list"), rows, title=f"Patient/{data.get('patient_id', '')}")


@click.command("medlist")
@click.argument("patient", type=PATIENT, help="The patient id (p1 or Patient/p1).")
@click.option("--fhir", is_flag=True, help="As a FHIR R4 List of MedicationStatements (JSON).")
@json_option
def medlist(patient: str, fhir: bool, as_json: bool) -> int:
    """A patient's current medication list, each entry with where it came from."""
    reply = send(GET_MEDICATION_LIST, build(GetMedicationList, patient_id=patient, format="fhir" if fhir else "mtm"))
    if fhir and not as_json and reply.ok:
        output.print_json(reply.data)
        return 0
    return output.show_reply(reply, as_json, _medication_table)


def _referrals_table(reply: CommandReply) -> None:
    output.table(
        ("Referral", "Status", "Patient", "Physician", "Requested", "Respond by", "Read", "Recommendation"),
        (
            (
                r["referral_id"],
                r["status"] + (" OVERDUE" if r.get("overdue") else ""),
                r["patient"],
                r["physician_id"],
                (r.get("requested_at") or "")[:16].replace("T", " "),
                (r.get("respond_by") or "")[:16].replace("T", " "),
                bool(r.get("acknowledged_at")),
                (r.get("referral") or {}).get("text"),
            )
            for r in output.rows_of(reply.data)
        ),
        empty="no referrals",
    )


@click.command("referrals")
@click.option("--physician", type=PRACTITIONER, help="Only this physician's (a physician sees only their own).")
@click.option(
    "--status",
    type=click.Choice(["requested", "accepted", "declined", "modified"]),
    help="Only referrals in this state.",
)
@click.option("--patient", type=PATIENT, help="Only this patient's referrals (p1 or Patient/p1).")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Skip this many.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True, help="At most this many.")
@json_option
def referrals(
    physician: str | None, status: str | None, patient: str | None, offset: int, limit: int, as_json: bool
) -> int:
    """Referrals to prescribers, with where each stands."""
    query = build(ListReferrals, physician_id=physician, status=status, patient_id=patient, offset=offset, limit=limit)
    return output.show_reply(send(LIST_REFERRALS, query), as_json, _referrals_table)


@click.command("answer")
@click.argument("referral", type=REFERRAL, help="The referral's id, as `mtm referrals` lists it.")
@click.option("--decision", type=click.Choice(get_args(ReferralDecision)), required=True, help="The answer.")
@click.option("--note", help="A note for the pharmacist.")
@json_option
def answer(referral: uuid.UUID, decision: str, note: str | None, as_json: bool) -> int:
    """Answer a referral as the physician it is addressed to."""
    command = build(AnswerReferral, referral_id=referral, decision=decision, note=note)
    return output.show_reply(send(ANSWER_REFERRAL, command), as_json)


COMMANDS = (medlist, referrals, answer)
