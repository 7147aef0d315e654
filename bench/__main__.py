"""`python -m bench` (`make bench`): every benchmark phase in one run, the table, and bench/results/latest.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import (
    OTHER_PROCESSES,
    Encoded,
    PhaseFailed,
    Progress,
    Servers,
    create_database,
    encoded_events,
    encoded_stream,
    log_events,
    tuning_env,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / "cache"
PHASES = (
    "raw",
    "projection",
    "naive",
    "peer",
    "e2e",
    "scaleout",
    "latency",
    "web",
    "dur",
    "documents",
    "program",
    "rebuild",
)
# Replicas of every service in the scale-out phase, each consuming its share of the patient partitions.
SCALE_OUT_REPLICAS = (1, 2, 4)
# The bound is 5 minutes on 2 cores; the rebuild, last, gets what is left of this.
TOTAL_BUDGET_S = 285.0
# The rebuild's own set-up (its NATS, a fresh service) and the final report run after its budget.
REBUILD_OVERHEAD_S = 25.0
REBUILD_MIN_BUDGET_S = 30.0
E2E_FALLBACK_RATE_PER_S = 3_000.0
E2E_POOL_CAP = 200_000
NOISY_NEIGHBOUR_CORES = 0.25


@dataclass(frozen=True)
class Plan:
    raw_seconds_each: float
    hop_seconds: float
    compare_events: int
    e2e_warmup_s: float
    e2e_measure_s: float
    latency_warmup_s: float
    latency_offered_s: float
    latency_light_offered_s: float
    rebuild_budget_s: float
    web_open_tasks: int = 10_000


FULL = Plan(
    raw_seconds_each=2.0,
    hop_seconds=5.0,
    compare_events=5_000,
    e2e_warmup_s=5.0,
    e2e_measure_s=30.0,
    latency_warmup_s=2.0,
    latency_offered_s=10.0,
    latency_light_offered_s=5.0,
    rebuild_budget_s=60.0,
)
QUICK = Plan(
    raw_seconds_each=0.5,
    hop_seconds=2.0,
    compare_events=1_000,
    e2e_warmup_s=2.0,
    e2e_measure_s=5.0,
    latency_warmup_s=1.0,
    latency_offered_s=3.0,
    latency_light_offered_s=2.0,
    rebuild_budget_s=15.0,
    web_open_tasks=1_000,
)


class Display:
    """A rich progress bar per phase (plain lines when rich is missing)."""

    def __init__(self, phases: list[str]) -> None:
        self._phases = phases
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Display:
        try:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
        except ImportError:
            return self
        self._progress = Progress(
            TextColumn("{task.fields[phase]:<11}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
        )
        self._progress.__enter__()
        for phase in self._phases:
            self._tasks[phase] = self._progress.add_task("waiting", total=1.0, phase=phase, start=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def log(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def callback(self, phase: str) -> Progress:
        if self._progress is None:
            last = [-1]

            def plain(label: str, fraction: float) -> None:
                if int(fraction * 10) != last[0]:
                    last[0] = int(fraction * 10)
                    print(f"{phase}: {label} {fraction:.0%}", flush=True)

            return plain
        task = self._tasks[phase]
        self._progress.start_task(task)

        def update(label: str, fraction: float) -> None:
            self._progress.update(task, description=label, completed=max(0.0, min(1.0, fraction)))

        return update

    def finish(self, phase: str, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._tasks[phase], description=text, completed=1.0)
            self._progress.stop_task(self._tasks[phase])


class Bench:
    """Runs the chosen phases in order, each isolated; a failing phase is reported and the others still run."""

    def __init__(self, plan: Plan, phases: list[str], work_dir: Path, display: Display) -> None:
        self.plan = plan
        self.phases = phases
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.display = display
        self.servers = Servers(work_dir)
        self.results: dict[str, Any] = {}
        self.failures: dict[str, str] = {}
        self.phase_seconds: dict[str, float] = {}
        self.started = time.monotonic()
        self._compare_events: list[Any] | None = None

    def compare_events(self) -> list[Any]:
        """The one list of discharges the projection, the naive app and the peer all get."""
        if self._compare_events is None:
            from bench.workload import transition_events

            self._compare_events = list(transition_events(self.plan.compare_events))
        return self._compare_events

    async def run(self) -> None:
        self.results["machine_busy_cores_before"] = await asyncio.to_thread(busy_cores, 1.0)
        await asyncio.to_thread(self.servers.start)
        self.results["postgres_version"] = await postgres_version(self.servers.database_url)
        for phase in self.phases:
            progress = self.display.callback(phase)
            started = time.monotonic()
            try:
                figures = await getattr(self, f"phase_{phase}")(progress)
            except Exception as exc:
                self.failures[phase] = f"{type(exc).__name__}: {exc}"
                self.display.finish(phase, f"[red]failed: {type(exc).__name__}")
                self.display.log(f"[red]{phase} failed[/red]: {exc} (service logs: {self.log_dir})")
            else:
                self.results.update(figures)
                self.display.finish(phase, f"done in {time.monotonic() - started:.0f} s")
            self.phase_seconds[phase] = round(time.monotonic() - started, 1)
        await self.servers.drop_databases()

    async def phase_raw(self, progress: Progress) -> dict[str, Any]:
        from bench import raw

        payloads = log_events(500)
        async with self.servers.nats("raw") as phase:
            database_url = await create_database(self.servers.database("raw", "limits"))
            return await raw.run(
                phase.nats_client(),
                database_url,
                payloads,
                progress,
                seconds_each=self.plan.raw_seconds_each,
                hop_seconds=self.plan.hop_seconds,
            )

    async def phase_projection(self, progress: Progress) -> dict[str, Any]:
        from bench import e2e
        from bench.workload import sent_by_hospital

        messages = [sent_by_hospital(event) for event in self.compare_events()]
        return await e2e.run_projection(self.servers, self.log_dir, messages, progress)

    async def phase_naive(self, progress: Progress) -> dict[str, Any]:
        from bench import naive

        async with self.servers.nats("naive") as phase:
            figures = await naive.run(phase, self.compare_events(), progress)
        return {**figures, "naive_events": len(self.compare_events())}

    async def phase_peer(self, progress: Progress) -> dict[str, Any]:
        from bench import peer

        figures = await peer.run(self.servers.database_url, self.compare_events(), progress)
        return {**figures, "peer_events": len(self.compare_events())}

    async def phase_e2e(self, progress: Progress) -> dict[str, Any]:
        from bench import e2e

        # Discharges are built before the services start, so building them does not take the services' CPU;
        # the pool is sized from the projection rate, and topped up on the fly (reported) if it runs dry.
        rate = float(self.results.get("recon_projection_events_per_s") or E2E_FALLBACK_RATE_PER_S)
        span_s = self.plan.e2e_warmup_s + self.plan.e2e_measure_s
        pool_size = min(E2E_POOL_CAP, int(rate * 1.5 * span_s) + 8 * 256)
        progress(f"building {pool_size:,} discharges", 0.0)
        pool = await asyncio.to_thread(encoded_events, pool_size)
        source = CountingSource(itertools.chain(pool, encoded_stream()))
        figures = await e2e.run(
            self.servers,
            self.log_dir,
            source,
            progress,
            warmup_s=self.plan.e2e_warmup_s,
            measure_s=self.plan.e2e_measure_s,
        )
        figures["e2e_pregenerated"] = pool_size
        figures["e2e_generated_during_run"] = max(0, source.taken - pool_size)
        for name, mb in figures["service_rss_mb"].items():
            figures[f"rss_mb_{name}"] = mb
        return figures

    async def phase_scaleout(self, progress: Progress) -> dict[str, Any]:
        """End to end with 1, 2 and 4 replicas of every service (consumer groups to match), shorter runs."""
        from bench import e2e

        rates: dict[str, float] = {}
        cpu: dict[str, float] = {}
        pool = await asyncio.to_thread(encoded_events, 8 * 256)
        for step, replicas in enumerate(SCALE_OUT_REPLICAS):

            def scaled(text: str, fraction: float, step: int = step, replicas: int = replicas) -> None:
                progress(f"{replicas} replicas: {text}", (step + fraction) / len(SCALE_OUT_REPLICAS))

            figures = await e2e.run(
                self.servers,
                self.log_dir,
                itertools.chain(pool, encoded_stream()),
                scaled,
                warmup_s=self.plan.e2e_warmup_s / 2,
                measure_s=self.plan.e2e_measure_s / 3,
                phase=f"scaleout{replicas}",
                extra_env={"MTM_REPLICAS": str(replicas), "MTM_CONSUMER_GROUPS": str(replicas)},
            )
            rates[str(replicas)] = figures["e2e_events_per_s"]
            cpu[str(replicas)] = round(sum(figures["e2e_cpu_cores"].values()), 2)
        return {"scaleout_events_per_s": rates, "scaleout_cpu_cores": cpu}

    async def phase_latency(self, progress: Progress) -> dict[str, Any]:
        from bench import latency

        count = int(latency.RATE_PER_S * (self.plan.latency_warmup_s + self.plan.latency_offered_s))
        messages = await asyncio.to_thread(encoded_events, count)
        # First at light load, on servers and databases of its own: how much of the latency at 500/s is the
        # serial path itself and how much is queueing.
        light = await latency.run(
            self.servers,
            self.log_dir,
            messages,
            lambda label, done: progress(f"at {latency.LIGHT_RATE_PER_S:.0f}/s: {label}", 0.3 * done),
            rate_per_s=latency.LIGHT_RATE_PER_S,
            warmup_s=self.plan.latency_warmup_s,
            offered_s=self.plan.latency_light_offered_s,
            phase="latencylight",
        )
        return light | await latency.run(
            self.servers,
            self.log_dir,
            messages,
            lambda label, done: progress(f"at {latency.RATE_PER_S:.0f}/s: {label}", 0.3 + 0.7 * done),
            warmup_s=self.plan.latency_warmup_s,
            offered_s=self.plan.latency_offered_s,
        )

    async def phase_web(self, progress: Progress) -> dict[str, Any]:
        from bench import web

        return await web.run(self.servers, self.log_dir, progress, tasks=self.plan.web_open_tasks)

    async def phase_dur(self, progress: Progress) -> dict[str, Any]:
        progress("python -m bench.dur_check", 0.1)
        return await asyncio.to_thread(run_dur_check)

    async def phase_documents(self, progress: Progress) -> dict[str, Any]:
        from bench import documents

        progress("MAP + PML: PDF, HTML, FHIR", 0.1)
        return await asyncio.to_thread(documents.run, 3.0 if self.plan is FULL else 0.5)

    async def phase_program(self, progress: Progress) -> dict[str, Any]:
        from bench import program

        figures = await asyncio.to_thread(program.run_sweep, progress)
        return {**figures, **await program.run_fill_ingestion(self.servers, self.log_dir, progress)}

    async def phase_rebuild(self, progress: Progress) -> dict[str, Any]:
        from bench import rebuild

        left_s = TOTAL_BUDGET_S - (time.monotonic() - self.started) - REBUILD_OVERHEAD_S
        # At least what this machine needs to replay the whole cached log to its swap (about 20 s).
        budget_s = max(REBUILD_MIN_BUDGET_S, min(self.plan.rebuild_budget_s, left_s))
        figures = await rebuild.run(CACHE_DIR, self.servers.database_url, progress, budget_s=budget_s)
        return {**figures, "rebuild_budget_s": round(budget_s, 1)}


class CountingSource(Iterator[Encoded]):
    def __init__(self, source: Iterator[Encoded]) -> None:
        self._source = source
        self.taken = 0

    def __next__(self) -> Encoded:
        self.taken += 1
        return next(self._source)


DUR_MEDIAN = re.compile(r"check\(\) on (\d+) medications .*median ([\d.]+) ms")
KB_LOAD_MEDIAN = re.compile(r"KB load .*median ([\d.]+) ms")


def run_dur_check() -> dict[str, Any]:
    """bench/dur_check.py prints its figures and returns none, so it runs as its own process and is parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.dur_check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    if done.returncode != 0:
        raise PhaseFailed(f"bench.dur_check exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    check = DUR_MEDIAN.search(done.stdout)
    if check is None:
        raise PhaseFailed(f"no median in bench.dur_check's output: {done.stdout.strip()[-500:]}")
    figures: dict[str, Any] = {
        "dur_check_ms_median": float(check.group(2)),
        "dur_check_medications": int(check.group(1)),
    }
    if load := KB_LOAD_MEDIAN.search(done.stdout):
        figures["dur_kb_load_ms_median"] = float(load.group(1))
    return figures


def busy_cores(seconds: float) -> float | None:
    """How many cores the machine kept busy over `seconds`: other work there makes every figure pessimistic."""
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.cpu_percent(interval=seconds) / 100 * (os.cpu_count() or 1), 2)


async def postgres_version(database_url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    with contextlib.suppress(Exception):
        from mtm.devstack.embedded import nats_server_binary

        version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10)
        info["nats_server"] = version.stdout.strip()
    return info


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    with contextlib.suppress(Exception):
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    return {}


def notes(bench: Bench, total_s: float) -> list[str]:
    results = bench.results
    lines = []
    if cpu := results.get("e2e_cpu_cores"):
        split = ", ".join(f"{name} {cores:.2f}" for name, cores in sorted(cpu.items(), key=lambda kv: -kv[1]))
        lines.append(f"CPU during e2e (cores busy, {os.cpu_count()} available): {split}")
    if per_discharge := results.get("e2e_cpu_ms_per_discharge"):
        costs = sorted(per_discharge.items(), key=lambda kv: -kv[1])
        lines.append(
            f"CPU per discharge end to end: {sum(per_discharge.values()):.2f} ms ("
            + ", ".join(f"{name} {ms:.2f}" for name, ms in costs if ms >= 0.005)
            + ")"
        )
    if per_event := results.get("recon_projection_cpu_ms_per_event"):
        costs = sorted(per_event.items(), key=lambda kv: -kv[1])
        lines.append(
            f"CPU per event in the projection phase: {sum(per_event.values()):.3f} ms ("
            + ", ".join(f"{name} {ms:.3f}" for name, ms in costs if ms >= 0.0005)
            + ")"
        )
    busy = {"before the run": results.get("machine_busy_cores_before") or 0.0}
    if cpu:
        busy["during e2e"] = cpu.get(OTHER_PROCESSES, 0.0)
    if max(busy.values()) >= NOISY_NEIGHBOUR_CORES:
        when = " and ".join(f"{cores:.2f} cores {moment}" for moment, cores in busy.items())
        lines.append(f"[yellow]Other processes on this machine kept busy {when}: the figures are pessimistic")
    if windows := results.get("e2e_window_rates_per_s"):
        lines.append(f"e2e review tasks/s per 5 s window: {', '.join(f'{w:,.0f}' for w in windows)}")
    if results.get("e2e_generated_during_run"):
        lines.append(f"[yellow]e2e pool ran dry: {results['e2e_generated_during_run']:,} discharges built under load")
    for key, rate in (("latency_missing_at_100", "100/s"), ("latency_missing", "500/s")):
        if results.get(key):
            lines.append(f"[yellow]latency at {rate}: {results[key]} review tasks never arrived (counted as ∞)")
    tuning = tuning_env()
    lines.append(
        "Service tuning: "
        + (", ".join(f"{k}={v}" for k, v in tuning.items()) if tuning else "defaults (no MTM_ tuning variables set)")
    )
    lines.append(
        f"Servers: NATS {results['servers']['nats']}, Postgres {results['servers']['postgres']} "
        f"{results.get('postgres_version', '')}"
    )
    if results.get("interrupted"):
        lines.append("[red]Interrupted: the figures are those of the phases that finished")
    for phase, reason in bench.failures.items():
        lines.append(f"[red]{phase} failed: {reason}")
    lines.append("Phase times: " + ", ".join(f"{p} {s:.0f} s" for p, s in bench.phase_seconds.items()))
    lines.append(f"Total wall time: {total_s:.0f} s")
    return lines


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run, figures are rough)")
    parser.add_argument("--only", choices=PHASES, action="append", help="run only this phase (repeatable)")
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/latest.json for a full run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    phases = [p for p in PHASES if not args.only or p in args.only]
    plan = QUICK if args.quick else FULL
    from mtm.platform.logging import configure_logging

    # The embedded servers' start-up lines would scroll through the progress display.
    configure_logging("bench", "WARNING", "console")
    # SIGTERM (a CI timeout, `kill`) takes the Ctrl-C path, so every process and server started is stopped.
    signal.signal(signal.SIGTERM, interrupt)
    work_dir = Path(tempfile.mkdtemp(prefix="mtm-bench-"))
    started = time.monotonic()
    display = Display(phases)
    bench = Bench(plan, phases, work_dir, display)
    interrupted = False
    try:
        with display:
            asyncio.run(bench.run())
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        bench.failures["setup"] = f"{type(exc).__name__}: {exc}"
    finally:
        bench.servers.stop()
    total_s = time.monotonic() - started

    results = bench.results
    results["servers"] = bench.servers.origin
    report.derive(results)
    results.update(
        {
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "git": git_commit(),
            "machine": machine(),
            "plan": {"name": "quick" if args.quick else "full", **asdict(plan)},
            "phases": phases,
            "phase_seconds": bench.phase_seconds,
            "failures": bench.failures,
            "service_tuning": tuning_env(),
            "total_wall_s": round(total_s, 1),
            "interrupted": interrupted,
        }
    )
    results["goals_met"] = report.goals(results)
    partial = args.quick or args.only or interrupted
    output = args.output or RESULTS_DIR / ("partial.json" if partial else "latest.json")
    report.write_json(results, output)
    report.render(results, notes(bench, total_s))
    print(f"Figures written to {output}")
    if bench.failures or interrupted:
        print(f"Service logs and server data kept in {work_dir}")
        return 1
    shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
