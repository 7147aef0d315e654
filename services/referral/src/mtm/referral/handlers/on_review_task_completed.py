"""ReviewTaskCompleted → one referral per recommendation that needs the prescriber → ReferralRequested."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from mtm.contracts import ReferralRequested, ReviewTaskCompleted
from mtm.platform.consumer import Accepted, BatchConsumer, Delivery, InvalidMessage, patient_event_consumer
from mtm.platform.outbox import enqueue_events
from mtm.referral.adapters.referrals import NewReferral, ReferralRepository
from mtm.referral.domain.referrals import NoResponsiblePhysician, derived_id, referrals_for

SOURCE = "mtm/referral"
DURABLE = "referral-review-task-completed"


def decode(delivery: Delivery) -> tuple[ReviewTaskCompleted, list[NewReferral]]:
    event = ReviewTaskCompleted.model_validate_json(delivery.data)
    try:
        referrals = referrals_for(event.data)
    except NoResponsiblePhysician as exc:
        raise InvalidMessage(str(exc)) from exc
    return event, [NewReferral(r, event.patient_id, event.correlation_id) for r in referrals]


async def apply(
    conn: asyncpg.Connection, batch: Sequence[Accepted[tuple[ReviewTaskCompleted, list[NewReferral]]]]
) -> None:
    new = [referral for item in batch for referral in item.value[1]]
    causes = {referral.referral.referral_id: item.value[0].id for item in batch for referral in item.value[1]}
    created = await ReferralRepository(conn).add_all(new)
    await enqueue_events(
        conn,
        [
            ReferralRequested.create(
                source=SOURCE,
                patient_id=r.patient_id,
                data=r.referral,
                correlation_id=r.correlation_id,
                causation_id=causes[r.referral.referral_id],
                event_id=derived_id("referral-requested", r.referral.referral_id),
            )
            for r in new
            if r.referral.referral_id in created
        ],
    )


def consumer() -> BatchConsumer[tuple[ReviewTaskCompleted, list[NewReferral]]]:
    return patient_event_consumer(DURABLE, ReviewTaskCompleted, apply, decode=decode)
