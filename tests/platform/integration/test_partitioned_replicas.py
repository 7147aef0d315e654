"""Two replicas of a service share the patient partitions: no per-patient reordering, no duplicates, takeover."""

from __future__ import annotations

from collections import defaultdict

import pytest
from conftest import declare_as_owner
from support.events import medications_reconciled
from support.jetstream import stream_messages, wait_for

from mtm.contracts import MedicationsReconciled, ReviewTaskCreated
from mtm.contracts.subjects import PATIENT_EVENTS_STREAM, event_filter, event_subject
from mtm.platform.streams import PATIENT_EVENTS
from mtm.review.bootstrap import ReviewSettings, create_app

pytestmark = pytest.mark.integration
# Review's reaction to reconciliations: partitioned by patient, each reconciliation opens one review task.
CONSUMER = "review-medications-reconciled"
GROUPS = 4


async def publish_round(nc, patients: list[str], per_patient: int) -> list[MedicationsReconciled]:
    """Interleave patients (p0, p1, ..., p0, p1, ...) so every batch mixes them."""
    js = nc.jetstream()
    published = []
    for _ in range(per_patient):
        for patient in patients:
            event = medications_reconciled(patient)
            await js.publish(
                event_subject(event), event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.id)}
            )
            published.append(event)
    return published


async def reviewed(nc, at_least: int) -> list[ReviewTaskCreated] | None:
    found = await stream_messages(nc, PATIENT_EVENTS_STREAM, event_filter(ReviewTaskCreated))
    return [ReviewTaskCreated.model_validate_json(m.data) for m in found] if len(found) >= at_least else None


def assert_once_and_in_order(published: list[MedicationsReconciled], results: list[ReviewTaskCreated]) -> None:
    assert sorted(str(r.causation_id) for r in results) == sorted(str(e.id) for e in published), "lost or doubled"
    expected: dict[str, list] = defaultdict(list)
    for event in published:
        expected[event.patient_id].append(event.id)
    seen: dict[str, list] = defaultdict(list)
    for result in results:  # stream order
        seen[result.patient_id].append(result.causation_id)
    assert seen == expected, "a patient's reconciliations were reviewed out of order"


async def test_two_replicas_share_partitions_without_reordering_or_duplicates(
    clean_jetstream, settings_for, run_service
):
    nc = clean_jetstream
    await declare_as_owner(nc, PATIENT_EVENTS)

    def replica(index: int):
        return create_app(
            settings_for(
                ReviewSettings,
                consumer_groups=GROUPS,
                replicas=2,
                replica_index=index,
                takeover_after_s=1.0,
                batch_size=16,
            )
        )

    first, second = replica(0), replica(1)
    patients = [f"part-{n}" for n in range(40)]
    async with run_service(first):
        async with run_service(second):
            held = [{k.group for k in app.runtime.leases.held if k.consumer == CONSUMER} for app in (first, second)]
            assert held == [{0, 2}, {1, 3}]
            published = await publish_round(nc, patients, per_patient=5)
            results = await wait_for(lambda: reviewed(nc, len(published)), timeout_s=60)
            work = [app.runtime.processors[CONSUMER].applied for app in (first, second)]
            assert all(n > 0 for n in work) and sum(work) == len(published)
        assert_once_and_in_order(published, results)

        # The second replica is gone: after the takeover delay the first consumes every partition.
        await wait_for(lambda: {k.group for k in first.runtime.leases.held if k.consumer == CONSUMER} == {0, 1, 2, 3})
        more = await publish_round(nc, patients, per_patient=2)
        everything = await wait_for(lambda: reviewed(nc, len(published) + len(more)), timeout_s=60)
    assert_once_and_in_order(published + more, everything)
    info = await nc.jetstream().consumers_info(PATIENT_EVENTS_STREAM)
    assert {c.name for c in info if c.name.startswith(CONSUMER)} == {
        f"{CONSUMER}-g{g}of{GROUPS}" for g in range(GROUPS)
    }
