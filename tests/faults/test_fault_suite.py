"""The fault suite's short versions (`make faults` runs the long ones): each fault on a stack of its own, small sizes.

Counts are asserted (nothing lost, doubled, left unparked or answered wrongly; every service ready, every outbox
delivered); timings are only reported, the machine is shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults import hostile, scenarios
from faults.report import Result, table

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def say(text: str) -> None:
    print(text, flush=True)


def assert_held(result: Result) -> None:
    print(table([result]))
    assert result.failure is None, result.failure
    assert not result.broken_counts(), (table([result]), result.details)


async def test_r1_kill_9_of_random_services_loses_doubles_and_repeats_nothing(tmp_path: Path) -> None:
    plan = scenarios.KillPlan(150, every_s=(1.0, 2.5), rate_per_s=15.0)
    result = await scenarios.r1_kills(plan, tmp_path, say)
    assert_held(result)
    assert result.figure("r1_kills").value >= 3
    assert result.figure("r1_lost").count == 150 * 11  # five events per discharge, six per referral


async def test_r2_a_killed_stream_leader_loses_no_acknowledged_event(tmp_path: Path) -> None:
    plan = scenarios.LeaderPlan(150, rate_per_s=10.0, leader_kills=1, rejoin_after_s=5.0)
    result = await scenarios.r2_leader(plan, tmp_path, say)
    assert_held(result)
    assert result.figure("r2_leader_kills").value == 1
    assert result.figure("r2_acknowledged_lost").count > 0


async def test_r3_postgres_and_nats_outages_lose_and_park_nothing(tmp_path: Path) -> None:
    plan = scenarios.OutagePlan(150, rate_per_s=10.0, postgres_down_s=4.0)
    result = await scenarios.r3_outages(plan, tmp_path, say)
    assert_held(result)
    assert [o["kind"] for o in result.details["outages"]] == ["postgres", "nats", "postgres", "nats"]


async def test_r4_hostile_input_is_parked_or_refused_and_valid_discharges_flow(tmp_path: Path) -> None:
    result = await hostile.r4_hostile(hostile.HostilePlan(inputs=400, discharges=20), tmp_path, say)
    assert_held(result)
    assert result.figure("r4_inputs").value >= 400  # hypothesis's, and the practitioner-id matrix
    assert set(result.details["inputs_by_subject"]) == {t.name for t in hostile.targets()}
    assert result.details["park_reasons"] and result.details["replies"]


def test_r4_has_a_valid_body_to_start_from_for_every_subject_the_services_read() -> None:
    """A subject a service adds joins R4 by itself (from its handler table); its template belongs in `TEMPLATES`."""
    missing = [t.name for t in hostile.targets() if t.kind != "status" and hostile.templates_for(t) == [{}]]
    assert missing == [], f"add a valid body for these to faults.hostile.TEMPLATES: {missing}"
