"""The program's use cases: evaluate a due member (eligibility, enrolment, adherence), disenrol a member."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime

from mtm.contracts import CommandReply, EventEnvelope, MtmDisenrolled, MtmEligibilityDetermined, MtmEnrolled
from mtm.contracts.identity import Actor
from mtm.contracts.program import AdherenceMeasured, Disenrolment, Enrolment
from mtm.contracts.program_commands import DisenrollMember
from mtm.platform.decisions import Decision, PatientHistory, decided
from mtm.program.domain.adherence import AdherenceTables
from mtm.program.domain.evaluation import MemberState, evaluate
from mtm.program.domain.targeting import Plan, TargetingTables

SOURCE = "mtm/program"
_NAMESPACE = uuid.UUID("c7e0b5a4-3f7d-4c51-9b0e-6d2a8f1e4c39")
ENROLMENT_EVENTS = (MtmEnrolled, MtmDisenrolled)


def derived_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, ":".join(str(p) for p in parts))


def evaluator(
    plan: Plan, tables: TargetingTables, adherence_tables: AdherenceTables
) -> Callable[[MemberState, datetime], list[EventEnvelope]]:
    """The timer's use case: what re-evaluating one due member records.

    Ids come from the member and what made them due (inputs seen, the day), so two looks never record twice.
    """

    def fire(member: MemberState, now: datetime) -> list[EventEnvelope]:
        today = now.date()
        result = evaluate(member, today, plan=plan, tables=tables, adherence_tables=adherence_tables)
        key = (member.patient_id, member.inputs_seen, today.isoformat())
        determined = MtmEligibilityDetermined.create(
            source=SOURCE,
            patient_id=member.patient_id,
            data=result.determination,
            event_id=derived_id("eligibility", *key),
            time=now,
        )
        events: list[EventEnvelope] = [determined]
        if result.enrol:
            events.append(
                determined.caused(
                    MtmEnrolled,
                    source=SOURCE,
                    data=Enrolment(
                        program_year=today.year,
                        enrolled_on=today,
                        criteria_met_on=today,
                        basis=result.determination.basis,  # type: ignore[arg-type]
                        eligibility_event_id=determined.id,
                    ),
                    event_id=derived_id("enrolled", member.patient_id, today.year),
                    time=now,
                )
            )
        if result.adherence is not None:
            events.append(
                determined.caused(
                    AdherenceMeasured,
                    source=SOURCE,
                    data=result.adherence,
                    event_id=derived_id("adherence", *key),
                    time=now,
                )
            )
        return events

    return fire


def disenroll_member(history: PatientHistory, command: DisenrollMember, actor: Actor, now: datetime) -> Decision:
    """An enrolled member leaves the program for the rest of the year, once."""
    year = command.program_year
    enrolled = [e for e in history.of(MtmEnrolled) if e.data.program_year == year]
    if not enrolled:
        return Decision.refuse(
            "not_found", f"not enrolled in the MTM program in {year}", resource_id=command.patient_id
        )
    left = [e for e in history.of(MtmDisenrolled) if e.data.program_year == year]
    if left:
        return Decision.refuse(
            "conflict",
            f"already disenrolled on {left[0].data.disenrolled_on.isoformat()} ({left[0].data.reason})",
            resource_id=command.patient_id,
            status="disenrolled",
        )
    effective: date = command.effective or now.date()
    event = decided(
        MtmDisenrolled,
        command,
        enrolled[0],
        source=SOURCE,
        data=Disenrolment(
            program_year=year, disenrolled_on=effective, reason=command.reason, note=command.note, actor=actor
        ),
        event_id=derived_id("disenrolled", command.patient_id, year),
        at=now,
    )
    reply = CommandReply(
        outcome="accepted", message="disenrolled", resource_id=command.patient_id, status="disenrolled"
    )
    return Decision(reply, (event,))
