"""The MTM program's clock: when CMRs and TMRs open and fall due, what a completed review counts as, escalation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from mtm.contracts.documentation import MtmService
from mtm.contracts.envelope import EventEnvelope
from mtm.contracts.events import ReviewReason, ReviewTrigger
from mtm.contracts.program import MtmDisenrolled, MtmEnrolled

_NAMESPACE = uuid.UUID("3f1f8e64-0d55-4a43-bb0c-94f0c8a7d512")

# 42 CFR 423.153(d)(1)(vii)(B): enrolled members are offered a CMR at least annually, the first within 60 days
# of enrolment, and TMRs at least quarterly; CMS asks for the CMR's written summary (MAP + PML in the
# Standardized Format) within 14 days of the CMR.
CMR_OFFER_WINDOW = timedelta(days=60)
CMR_INTERVAL = timedelta(days=365)
ANNUAL_CMR_LEAD = timedelta(days=60)
"""The next yearly CMR opens this long before it is due, the same window as the first offer."""
ACTION_PLAN_WINDOW = timedelta(days=14)
# A triggered TMR (adherence below threshold, a follow-up that came due) is worked within these windows; they are
# mtm's service levels, not CMS numbers (CMS only says "at least quarterly").
ADHERENCE_TMR_WINDOW = timedelta(days=30)
FOLLOW_UP_WINDOW = timedelta(days=7)

REASON_OF_SERVICE: dict[MtmService, ReviewReason] = {
    "cmr": "comprehensive-medication-review",
    "tmr": "targeted-medication-review",
}


def schedule_id(kind: str, cause: uuid.UUID | str) -> uuid.UUID:
    """One scheduled review per cause, whatever the number of deliveries."""
    return uuid.uuid5(_NAMESPACE, f"{kind}:{cause}")


def quarter_start(moment: datetime) -> datetime:
    first_month = 3 * ((moment.month - 1) // 3) + 1
    return datetime(moment.year, first_month, 1, tzinfo=UTC)


def next_quarter_start(moment: datetime) -> datetime:
    start = quarter_start(moment)
    month = start.month + 3
    return datetime(start.year + (month > 12), (month - 1) % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ScheduledReview:
    """A review that will open at `opens_at` and be due at `due`, and what caused it."""

    schedule_id: uuid.UUID
    service: MtmService
    trigger: ReviewTrigger
    opens_at: datetime
    due: datetime


MEMBERSHIP_EVENTS: tuple[type[EventEnvelope], ...] = (MtmEnrolled, MtmDisenrolled)


def is_enrolled(events: Iterable[EventEnvelope]) -> bool:
    """Whether the member is in the MTM program after these events (in log order): the last word counts."""
    enrolled = False
    for event in events:
        if isinstance(event, MtmEnrolled):
            enrolled = True
        elif isinstance(event, MtmDisenrolled):
            enrolled = False
    return enrolled


def enrolment_reviews(event_id: uuid.UUID, patient_id: str, enrolled_at: datetime) -> list[ScheduledReview]:
    """An enrolment opens the CMR offer at once and schedules the first quarterly TMR."""
    quarter = next_quarter_start(enrolled_at)
    return [
        ScheduledReview(
            schedule_id("cmr-offer", event_id), "cmr", "enrolment", enrolled_at, enrolled_at + CMR_OFFER_WINDOW
        ),
        quarterly_review(patient_id, quarter),
    ]


def quarterly_review(patient_id: str, quarter: datetime) -> ScheduledReview:
    """The member's TMR of the quarter starting at `quarter`, due at its end (one per member and quarter)."""
    return ScheduledReview(
        schedule_id("quarterly", f"{patient_id}:{quarter.date().isoformat()}"),
        "tmr",
        "quarterly",
        quarter,
        next_quarter_start(quarter),
    )


def annual_review(completion_event_id: uuid.UUID, performed_on: date) -> ScheduledReview:
    """The next CMR after one performed on `performed_on`: due a year later, opening 60 days before."""
    due = day_start(performed_on) + CMR_INTERVAL
    return ScheduledReview(schedule_id("annual-cmr", completion_event_id), "cmr", "annual", due - ANNUAL_CMR_LEAD, due)


def adherence_review(event_id: uuid.UUID, at: datetime) -> ScheduledReview:
    return ScheduledReview(schedule_id("adherence", event_id), "tmr", "adherence", at, at + ADHERENCE_TMR_WINDOW)


def follow_up_review(follow_up_id: uuid.UUID, due: datetime) -> ScheduledReview:
    return ScheduledReview(schedule_id("follow-up", follow_up_id), "tmr", "follow-up", due, due + FOLLOW_UP_WINDOW)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def action_plan_due(performed_on: date) -> datetime:
    """The end of the 14th day after the CMR (UTC)."""
    return day_start(performed_on) + ACTION_PLAN_WINDOW + timedelta(days=1)


@dataclass(frozen=True)
class DueReview:
    """A scheduled review whose time came, with what the projection knows of the member at that moment."""

    service: MtmService
    trigger: ReviewTrigger
    enrolled: bool
    open_task_id: uuid.UUID | None
    open_task_is_cmr: bool
    reviewed_since_opening: bool
    """A review of the same service (or a CMR, which covers a TMR) was completed since the window opened."""


SCHEDULED_TRIGGERS = frozenset({"enrolment", "annual", "quarterly"})
"""Reviews owed by the calendar: one done in their window already fulfils them. A triggered review (adherence, a
follow-up) is about something that happened, so only an open review can take it over."""


Outcome = (
    tuple[Literal["open"], None] | tuple[Literal["skip"], Literal["not-enrolled", "open-review", "already-reviewed"]]
)


def decide_due_review(due: DueReview) -> Outcome:
    """Open the review, or say why not: one open review per member covers every TMR trigger; CMRs always open."""
    if due.trigger != "follow-up" and not due.enrolled:
        # A follow-up the pharmacist scheduled stands whether or not the member is in the MTM program.
        return ("skip", "not-enrolled")
    if due.reviewed_since_opening and due.trigger in SCHEDULED_TRIGGERS:
        return ("skip", "already-reviewed")
    if due.open_task_id is not None and (due.service == "tmr" or due.open_task_is_cmr):
        return ("skip", "open-review")
    return ("open", None)


def service_of(reason: ReviewReason, enrolled: bool) -> MtmService | None:
    """What a completed review counts as for CMS: a CMR, a TMR, or (a review of someone not enrolled) nothing.

    A post-discharge review of an enrolled member is the TMR its discharge (and the alerts found at it) triggers.
    """
    if not enrolled:
        return None
    return "cmr" if reason == "comprehensive-medication-review" else "tmr"
