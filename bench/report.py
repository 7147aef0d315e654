"""The results table (figure, value, raw limit, ratio, goal) and the JSON file with the same figures."""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOAL_E2E_PER_S = 5_000.0
GOAL_TIMES_NAIVE = 5.0
GOAL_TIMES_PEER = 15.0
GOAL_P99_MS = 100.0
GOAL_REBUILD_PER_S = 30_000.0
GOAL_DUR_MS = 1.0
GOAL_RSS_MB = 200.0
GOAL_TARGETING_PER_S = 100_000.0
GOAL_FILLS_PER_S = 20_000.0


@dataclass(frozen=True)
class Goal:
    text: str
    met: Callable[[float], bool]


def at_least(bound: float, text: str) -> Goal:
    return Goal(text, lambda value: operator.ge(value, bound))


def at_most(bound: float, text: str) -> Goal:
    return Goal(text, lambda value: operator.le(value, bound))


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    unit: str
    raw_key: str | None = None
    raw_label: str = ""
    goal: Goal | None = None


RAW_ROWS = (
    Row("JetStream publish, awaited one by one", "raw_publish_sync_per_s", "msg/s"),
    Row("JetStream publish_async, windowed", "raw_publish_per_s", "msg/s"),
    Row("JetStream pull fetch + ack", "raw_consume_ack_per_s", "msg/s"),
    Row("JetStream pull fetch, one ack per batch (AckPolicy.ALL)", "raw_consume_ack_all_per_s", "msg/s"),
    Row("JetStream hop p50 at 500/s (publish → fetch)", "raw_hop_p50_ms_at_500", "ms"),
    Row("JetStream hop p99 at 500/s (publish → fetch)", "raw_hop_p99_ms_at_500", "ms"),
    Row("Postgres one transaction per row", "raw_tx_per_row_per_s", "rows/s"),
    Row("Postgres executemany, batch per transaction", "raw_executemany_rows_per_s", "rows/s"),
    Row("Postgres unnest insert, batch per transaction", "raw_unnest_rows_per_s", "rows/s"),
    Row("Postgres COPY, batch per transaction", "raw_copy_rows_per_s", "rows/s"),
    Row("Rebuild's log read by its reader, nothing applied", "raw_rebuild_read_per_s", "events/s"),
    Row("Postgres COPY of the rebuild's rows (reconciliations)", "raw_rebuild_copy_rows_per_s", "rows/s"),
)

# Raw limits of one figure's own work, derived from the raw rows and what the figure's phase counted.
BOUND_UNITS = {
    "e2e_nats_bound_per_s": "events/s",
    "fill_ingestion_nats_bound_per_s": "fills/s",
    "raw_rebuild_bound_per_s": "events/s",
}
RAW_UNITS = {row.key: row.unit for row in RAW_ROWS} | {"raw_batch_insert_rows_per_s": "rows/s"} | BOUND_UNITS
# Per unit of work, as JetStream counted it in the phase: (results key, prefix of the figures derived from it).
TRAFFIC = (("e2e_nats_per_discharge", "e2e"), ("fill_ingestion_nats_per_fill", "fill_ingestion"))

MTM_ROWS = (
    Row(
        "End to end, discharge → review task",
        "e2e_events_per_s",
        "events/s",
        "e2e_nats_bound_per_s",
        "its JetStream messages alone",
        at_least(GOAL_E2E_PER_S, "≥ 5,000/s"),
    ),
    Row("  JetStream messages stored per discharge", "e2e_nats_stored", "msg"),
    Row("  JetStream deliveries per discharge", "e2e_nats_delivered", "msg"),
    *(
        Row(f"End to end, {n} replica{'s' if n > 1 else ''} of every service", f"scaleout_{n}_events_per_s", "events/s")
        for n in (1, 2, 4)
    ),
    Row(
        "Reconciliation projection (service)",
        "recon_projection_events_per_s",
        "events/s",
        "raw_batch_insert_rows_per_s",
        "batch insert",
    ),
    Row("Naive FastStream projection", "naive_events_per_s", "events/s", "raw_tx_per_row_per_s", "tx per row"),
    Row(
        "Peer (eventsourcing) projection",
        "peer_events_per_s",
        "events/s",
        "raw_batch_insert_rows_per_s",
        "batch insert",
    ),
    Row(
        "Projection ÷ naive",
        "projection_vs_naive",
        "x",
        goal=at_least(GOAL_TIMES_NAIVE, "≥ 5x"),
    ),
    Row("Projection ÷ peer", "projection_vs_peer", "x", goal=at_least(GOAL_TIMES_PEER, "≥ 15x")),
    Row(
        "Latency p50 at 100/s (light load)", "p50_latency_ms_at_100", "ms", "raw_hop_p50_ms_at_500", "JetStream hop p50"
    ),
    Row(
        "Latency p99 at 100/s (light load)", "p99_latency_ms_at_100", "ms", "raw_hop_p99_ms_at_500", "JetStream hop p99"
    ),
    Row("Latency p50 at 500/s", "p50_latency_ms_at_500", "ms", "raw_hop_p50_ms_at_500", "JetStream hop p50"),
    Row("Latency p95 at 500/s", "p95_latency_ms_at_500", "ms"),
    Row(
        "Latency p99 at 500/s",
        "p99_latency_ms_at_500",
        "ms",
        "raw_hop_p99_ms_at_500",
        "JetStream hop p99",
        at_most(GOAL_P99_MS, "≤ 100 ms"),
    ),
    Row(
        "Rebuild of the reconciliation projection",
        "rebuild_events_per_s",
        "events/s",
        "raw_rebuild_bound_per_s",
        "its log read or COPY",
        at_least(GOAL_REBUILD_PER_S, "≥ 30,000/s"),
    ),
    Row("  ran to the swap (1) or out of time (0)", "rebuild_completed", ""),
    Row("  CPU per event of the rebuilding process", "rebuild_cpu_us_per_event", "µs"),
    Row("Worklist page, 10,000 open tasks: server p50", "web_worklist_server_p50_ms", "ms"),
    Row("Worklist page, 10,000 open tasks: server p99", "web_worklist_server_p99_ms", "ms"),
    Row("Worklist page, filtered, page 100: server p99", "web_worklist_filtered_server_p99_ms", "ms"),
    Row("Live update, discharge → browser's event stream p50", "web_live_p50_ms", "ms"),
    Row("Live update, discharge → browser's event stream p99", "web_live_p99_ms", "ms"),
    Row("Drug check, 20 medications (median)", "dur_check_ms_median", "ms", goal=at_most(GOAL_DUR_MS, "≤ 1 ms")),
    Row("MAP + PML rendered as PDF (12 medications)", "map_pdf_documents_per_s", "documents/s"),
    Row("MAP + PML rendered as HTML", "map_html_documents_per_s", "documents/s"),
    Row("MAP + PML as FHIR (CarePlan, List)", "map_fhir_documents_per_s", "documents/s"),
    Row(
        "MTM targeting sweep (1,000,000 members)",
        "targeting_members_per_s",
        "members/s",
        goal=at_least(GOAL_TARGETING_PER_S, "≥ 100,000/s"),
    ),
    Row("  CPU per member of the sweep", "targeting_cpu_us_per_member", "µs"),
    Row("MTM determination of each patient (100,000)", "targeting_determinations_per_s", "patients/s"),
    Row("PDC adherence sweep (100,000 patients)", "adherence_patients_per_s", "patients/s"),
    Row(
        "Pharmacy fills, intake → medication list → adherence projection",
        "fill_ingestion_per_s",
        "fills/s",
        "fill_ingestion_nats_bound_per_s",
        "its JetStream messages alone",
        at_least(GOAL_FILLS_PER_S, "≥ 20,000/s"),
    ),
    Row("  JetStream messages stored per fill", "fill_ingestion_nats_stored", "msg"),
    Row("  JetStream deliveries per fill", "fill_ingestion_nats_delivered", "msg"),
    Row("Pharmacy fills, the same from start-up", "fill_ingestion_from_start_per_s", "fills/s"),
    Row("Pharmacy fills, intake → patient log, from start-up", "fill_ingestion_to_log_per_s", "fills/s"),
    Row("Largest service RSS under load", "max_service_rss_mb", "MB", goal=at_most(GOAL_RSS_MB, "≤ 200 MB")),
)


def derive(results: dict[str, Any]) -> None:
    """Figures computed from others: the comparisons the goals are stated on."""
    for replicas, rate in dict(results.get("scaleout_events_per_s") or {}).items():
        results[f"scaleout_{replicas}_events_per_s"] = rate
    for key, prefix in TRAFFIC:
        per_unit = dict(results.get(key) or {})
        for count in ("stored", "delivered"):
            if count in per_unit:
                results[f"{prefix}_nats_{count}"] = per_unit[count]
        bound = nats_bound(
            per_unit, number(results.get("raw_publish_per_s")), number(results.get("raw_consume_ack_per_s"))
        )
        if bound is not None:
            results[f"{prefix}_nats_bound_per_s"] = bound
    rebuild_limits = [number(results.get(k)) for k in ("raw_rebuild_read_per_s", "raw_rebuild_copy_rows_per_s")]
    if all(limit is not None for limit in rebuild_limits):
        results["raw_rebuild_bound_per_s"] = min(rebuild_limits)  # type: ignore[type-var]
    projection = results.get("recon_projection_events_per_s")
    for other in ("naive", "peer"):
        baseline = results.get(f"{other}_events_per_s")
        if isinstance(projection, int | float) and isinstance(baseline, int | float) and baseline > 0:
            results[f"projection_vs_{other}"] = round(projection / baseline, 2)


def nats_bound(
    per_unit: dict[str, Any], raw_publish_per_s: float | None, raw_consume_per_s: float | None
) -> float | None:
    """Units a second this machine could go if it did nothing but publish and consume (fetch + ack) the JetStream
    messages one unit needs, each at the raw rate measured in the same run: no rate that needs them can pass it.

    Both raw rates are a Python client and the server sharing the machine, as the services and the server do.
    """
    if "stored" not in per_unit or "delivered" not in per_unit or not raw_publish_per_s or not raw_consume_per_s:
        return None
    seconds = per_unit["stored"] / raw_publish_per_s + per_unit["delivered"] / raw_consume_per_s
    return round(1 / seconds, 1) if seconds > 0 else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "∞ (missing)"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "msg":
        return f"{value:.1f}"
    if unit in ("ms", "µs", "MB"):
        return f"{value:,.3f} {unit}" if value < 10 else f"{value:,.1f} {unit}"
    return f"{value:,.0f} {unit}"


def ratio_text(value: float | None, raw: float | None, unit: str) -> str:
    if value is None or raw is None or raw == 0 or math.isinf(value):
        return ""
    ratio = value / raw
    return f"{ratio:.2f}x of raw" if unit != "ms" else f"{ratio:.0f}x the raw hop"


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(figure, value, raw limit, ratio, goal, met) for every row."""
    rows = []
    for row in RAW_ROWS:
        rows.append((row.label, format_value(number(results.get(row.key)), row.unit), "", "", "", ""))
    for row in (*MTM_ROWS, *rss_rows(results)):
        value = number(results.get(row.key))
        raw = number(results.get(row.raw_key)) if row.raw_key else None
        raw_unit = RAW_UNITS.get(row.raw_key or "", row.unit)
        raw_text = f"{format_value(raw, raw_unit)} ({row.raw_label})" if raw is not None else ""
        met = ""
        if row.goal is not None and value is not None:
            met = "met" if row.goal.met(value) else "NOT MET"
        rows.append(
            (
                row.label,
                format_value(value, row.unit),
                raw_text,
                ratio_text(value, raw, row.unit),
                row.goal.text if row.goal else "",
                met,
            )
        )
    return rows


def rss_rows(results: dict[str, Any]) -> list[Row]:
    return [
        Row(f"  RSS {name}", f"rss_mb_{name}", "MB", goal=at_most(GOAL_RSS_MB, "≤ 200 MB"))
        for name in sorted(results.get("service_rss_mb") or {})
    ]


def goals(results: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal: met, not met, or None when its figure is missing."""
    verdicts: dict[str, bool | None] = {}
    for row in (*MTM_ROWS, *rss_rows(results)):
        if row.goal is None:
            continue
        value = number(results.get(row.key))
        verdicts[row.key] = None if value is None else row.goal.met(value)
    return verdicts


def render(results: dict[str, Any], notes: list[str]) -> None:
    """Print the table with rich when it works (the bench group), else as aligned text."""
    header = ("Figure", "Value", "Raw limit", "Ratio", "Goal", "Met")
    rows = table_rows(results)
    try:
        render_rich(header, rows, notes)
    except Exception:
        # rich is missing, or was uninstalled under the running bench by a `uv sync` without the bench group.
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for line in (header, *rows):
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        for note in notes:
            print(re.sub(r"\[/?[a-z]+\]", "", note))


def render_rich(header: tuple[str, ...], rows: list[tuple[str, ...]], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mtm benchmark")
    for name in header:
        table.add_column(name, justify="right" if name in ("Value", "Raw limit", "Ratio") else "left")
    for index, row in enumerate(rows):
        style = "red" if row[5] == "NOT MET" else ("green" if row[5] == "met" else None)
        table.add_row(*row, style=style, end_section=index == len(RAW_ROWS) - 1)
    console = Console(width=max(160, Console().width))
    with console.capture() as captured:
        console.print(table)
        for note in notes:
            console.print(note, highlight=False)
    print(captured.get(), end="")


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(results), indent=2, sort_keys=True) + "\n")
