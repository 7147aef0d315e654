"""The bench's raw limits of a figure's own work: JetStream's messages per unit at the run's raw rates."""

from __future__ import annotations

import pytest

from bench import report

pytestmark = pytest.mark.unit


def test_the_bound_is_the_time_the_raw_rates_need_for_one_units_messages() -> None:
    # 4 stored at 40,000/s and 6 delivered at 30,000/s: 100 µs + 200 µs a unit.
    assert report.nats_bound({"stored": 4.0, "delivered": 6.0}, 40_000.0, 30_000.0) == pytest.approx(3333.3)


@pytest.mark.parametrize(
    ("per_unit", "publish", "consume"),
    [({}, 40_000.0, 30_000.0), ({"stored": 4.0, "delivered": 6.0}, None, 30_000.0), ({"stored": 4.0}, 1.0, 1.0)],
)
def test_no_bound_without_the_counts_or_the_raw_rates(
    per_unit: dict[str, float], publish: float | None, consume: float | None
) -> None:
    assert report.nats_bound(per_unit, publish, consume) is None


def test_derive_puts_each_bound_beside_its_figure() -> None:
    results = {
        "raw_publish_per_s": 40_000.0,
        "raw_consume_ack_per_s": 30_000.0,
        "e2e_events_per_s": 700.0,
        "e2e_nats_per_discharge": {"stored": 4.0, "delivered": 6.0},
        "fill_ingestion_per_s": 5_000.0,
        "fill_ingestion_nats_per_fill": {"stored": 2.0, "delivered": 3.0},
        "rebuild_events_per_s": 5_000.0,
        "raw_rebuild_read_per_s": 60_000.0,
        "raw_rebuild_copy_rows_per_s": 18_000.0,
    }

    report.derive(results)

    assert results["e2e_nats_bound_per_s"] == pytest.approx(3333.3)
    assert (results["e2e_nats_stored"], results["e2e_nats_delivered"]) == (4.0, 6.0)
    assert results["fill_ingestion_nats_bound_per_s"] == pytest.approx(6666.7)
    assert results["raw_rebuild_bound_per_s"] == 18_000.0
    rows = {row[0]: row for row in report.table_rows(results)}
    assert rows["End to end, discharge → review task"][2] == "3,333 events/s (its JetStream messages alone)"
    assert rows["Rebuild of the reconciliation projection"][3] == "0.28x of raw"
    assert rows["  JetStream deliveries per fill"][1] == "3.0"
