"""The benchmark's raw phase and report run at tiny sizes on the test infrastructure (figures are never checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.database import fresh_database_url

from mtm.devstack.infra import Infrastructure

pytestmark = pytest.mark.integration

RAW_KEYS = {
    "raw_publish_sync_per_s",
    "raw_publish_per_s",
    "raw_consume_ack_per_s",
    "raw_consume_ack_all_per_s",
    "raw_hop_p50_ms_at_500",
    "raw_hop_p99_ms_at_500",
    "raw_tx_per_row_per_s",
    "raw_executemany_rows_per_s",
    "raw_unnest_rows_per_s",
    "raw_copy_rows_per_s",
    "raw_batch_insert_rows_per_s",
}


async def test_raw_phase_and_report_write_every_key(
    infra: Infrastructure, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import raw, report
    from bench.harness import create_database, log_events

    database_url = await create_database(fresh_database_url(infra, "t_bench"))
    labels: list[str] = []

    results = await raw.run(
        infra.nats_client(),
        database_url,
        log_events(20),
        lambda label, _fraction: labels.append(label),
        seconds_each=0.05,
        hop_seconds=0.1,
    )

    assert RAW_KEYS <= results.keys()
    assert all(isinstance(results[key], float) for key in RAW_KEYS)
    assert labels and labels[-1] == "done"
    report.derive(results)
    results["goals_met"] = report.goals(results)
    report.write_json(results, tmp_path / "latest.json")
    written = json.loads((tmp_path / "latest.json").read_text())
    assert RAW_KEYS <= written.keys()
    report.render(results, ["note"])
    assert "JetStream publish_async, windowed" in capsys.readouterr().out
