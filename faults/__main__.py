"""`python -m faults` (`make faults`): R1 to R4 in one run, the table, and faults/results/latest.json."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from faults import FAULTS_DIR, REPO_ROOT
from faults.report import Result, table, write_json

RESULTS_DIR = FAULTS_DIR / "results"
SCENARIOS = ("R1", "R2", "R3", "R4")


@dataclass(frozen=True)
class Sizes:
    r1_discharges: int
    r2_discharges: int
    r3_discharges: int
    r4_inputs: int
    r4_discharges: int
    r2_leader_kills: int = 2


FULL = Sizes(r1_discharges=20_000, r2_discharges=3_000, r3_discharges=3_000, r4_inputs=10_000, r4_discharges=1_000)
QUICK = Sizes(
    r1_discharges=300, r2_discharges=300, r3_discharges=300, r4_inputs=600, r4_discharges=40, r2_leader_kills=1
)


def say(text: str) -> None:
    print(f"{datetime.now().strftime('%H:%M:%S')}  {text}", flush=True)


def runners(sizes: Sizes, work_dir: Path) -> dict[str, Callable[[], Awaitable[Result]]]:
    from faults import hostile, scenarios

    return {
        "R1": lambda: scenarios.r1_kills(scenarios.KillPlan(sizes.r1_discharges), work_dir / "r1", say),
        "R2": lambda: scenarios.r2_leader(
            scenarios.LeaderPlan(sizes.r2_discharges, leader_kills=sizes.r2_leader_kills), work_dir / "r2", say
        ),
        "R3": lambda: scenarios.r3_outages(scenarios.OutagePlan(sizes.r3_discharges), work_dir / "r3", say),
        "R4": lambda: hostile.r4_hostile(
            hostile.HostilePlan(inputs=sizes.r4_inputs, discharges=sizes.r4_discharges), work_dir / "r4", say
        ),
    }


async def run(chosen: list[str], sizes: Sizes, work_dir: Path) -> list[Result]:
    results = []
    for name in chosen:
        say(f"{name}: starting")
        started = time.monotonic()
        try:
            result = await runners(sizes, work_dir)[name]()
        except Exception as exc:
            result = Result(name, "did not finish", failure=f"{type(exc).__name__}: {exc}")
        result.seconds = round(time.monotonic() - started, 1)
        result.work_dir = str(work_dir / name.lower())
        results.append(result)
        say(f"{name}: {'held' if result.held else 'NOT HELD'} in {result.seconds:,.0f} s")
    return results


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, rough figures)")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data and service logs")
    args = parser.parse_args(argv)
    chosen = args.only or list(SCENARIOS)
    sizes = QUICK if args.quick else FULL
    work_dir = Path(tempfile.mkdtemp(prefix="mtm-faults-"))
    started = time.monotonic()
    say(f"fault suite: {', '.join(chosen)} ({'quick' if args.quick else 'full'}); work dir {work_dir}")
    results = asyncio.run(run(chosen, sizes, work_dir))
    elapsed = time.monotonic() - started
    everything = chosen == list(SCENARIOS) and not args.quick
    path = RESULTS_DIR / ("latest.json" if everything else "partial.json")
    held = all(r.held for r in results)
    write_json(
        results,
        path,
        started_at=datetime.now(UTC).isoformat(),
        seconds=round(elapsed, 1),
        commit=git_commit(),
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        sizes=sizes.__dict__,
        held=held,
    )
    print()
    print(table(results))
    print()
    say(f"{'all held' if held else 'NOT ALL HELD'}; {elapsed / 60:,.1f} minutes; results in {path}")
    if held and not args.keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        say(f"servers' data and service logs kept in {work_dir}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
