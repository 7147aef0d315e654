"""Everything the program service consumes and answers, in one table."""

from __future__ import annotations

from mtm.contracts import AdherenceMeasured, MtmDisenrolled, MtmEligibilityDetermined, MtmEnrolled
from mtm.contracts.program_commands import DisenrollMember, GetAlertReport, GetCmsReport, GetProgramStatus
from mtm.contracts.subjects import (
    DISENROLL_MEMBER,
    GET_ALERT_REPORT,
    GET_CMS_REPORT,
    GET_PROGRAM_STATUS,
)
from mtm.platform.service import Command, Query, Reaction, ServiceHandlers, on_events
from mtm.platform.timers import Timer
from mtm.program import application
from mtm.program.adapters import program
from mtm.program.domain.targeting import Plan
from mtm.program.tables import adherence_tables, targeting_tables

# Nobody waits on the program's inputs: they only mark members due, and the evaluation timer decides every second.
# A trickle of them (500 discharges/s, each a handful of events) is better taken a quarter of a second at a
# time than in a transaction per batch of one or two, on the cores the review path also needs.
INPUT_LINGER_S = 0.25


def _kept(durable: str, types: tuple) -> Reaction:
    """Events other services decided that the program keeps in its tables; they cause nothing by themselves."""
    return on_events(types, lambda _event: [], durable=durable, keeps_input=True, linger_s=INPUT_LINGER_S)


def handlers(*, plan: Plan | None = None, evaluation_every_s: float = 1.0) -> ServiceHandlers:
    return ServiceHandlers(
        projection=program.PROGRAM,
        reactions=(
            # Discharges and fills make the member due for evaluation (the timer below decides).
            _kept("program-inputs", program.INPUT_EVENTS),
            # Reviews and prescriber recommendations, counted by the CMS report.
            _kept("program-activity", program.ACTIVITY_EVENTS),
        ),
        commands=(
            Command(
                DISENROLL_MEMBER,
                DisenrollMember,
                roles=("pharmacist", "admin"),
                locate=program.patient_of_member,
                decide=application.disenroll_member,
                reads=application.ENROLMENT_EVENTS,
                emits=(MtmDisenrolled,),
                not_found="the program holds nothing for this patient",
            ),
        ),
        queries=(
            Query(GET_PROGRAM_STATUS, GetProgramStatus, ("pharmacist", "admin"), program.program_status),
            Query(GET_CMS_REPORT, GetCmsReport, ("pharmacist", "admin"), program.cms_report_query),
            Query(GET_ALERT_REPORT, GetAlertReport, ("pharmacist", "admin"), program.alert_report),
        ),
        timers=(
            # Eligibility on every discharge and fill, and at least quarterly; enrolment and adherence follow.
            Timer(
                name="program-evaluation",
                every_s=evaluation_every_s,
                due=program.due_members,
                fire=application.evaluator(plan or Plan(), targeting_tables(), adherence_tables()),
                emits=(MtmEligibilityDetermined, MtmEnrolled, AdherenceMeasured),
            ),
        ),
    )
