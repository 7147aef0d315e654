"""Pid files that outlive a killed `mtm up`: what it started, so the next run stops what was left behind."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# How long a process gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 20.0


@dataclass(frozen=True)
class Recorded:
    pid: int
    started: float
    extra: dict[str, Any]


def record(path: Path, pid: int, **extra: Any) -> None:
    """Write `pid` with its start time, so a recycled pid is never taken for the process we started."""
    path.parent.mkdir(parents=True, exist_ok=True)
    started = psutil.Process(pid).create_time()
    path.write_text(json.dumps({"pid": pid, "started": started, **extra}))


def read(path: Path) -> Recorded | None:
    try:
        body = json.loads(path.read_text())
        return Recorded(int(body.pop("pid")), float(body.pop("started")), body)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(entry: Recorded) -> psutil.Process | None:
    """The recorded process if it still runs (a zombie does not): same pid and same start time."""
    try:
        process = psutil.Process(entry.pid)
        if abs(process.create_time() - entry.started) > 0.01 or _gone(process):
            return None
        return process
    except psutil.Error:
        return None


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def stop(*targets: psutil.Process, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to all at once, SIGKILL to those still there after `grace_s`. A leftover is nobody's child here,
    so exits are polled rather than waited for."""
    for process in targets:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    deadline = time.monotonic() + grace_s
    while alive := [process for process in targets if not _gone(process)]:
        if time.monotonic() > deadline:
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            deadline = time.monotonic() + grace_s
        time.sleep(0.05)
    for process in targets:
        # Reaped here when it is our own child; a leftover's parent (or init) reaps it otherwise.
        with contextlib.suppress(psutil.Error, ChildProcessError):
            process.wait(timeout=0)


def stop_leftovers(*paths: Path, grace_s: float = STOP_GRACE_S) -> dict[Path, int]:
    """Stop the processes these pid files name that still run, all at once; their pids by file. The files go."""
    found: dict[Path, psutil.Process] = {}
    for path in paths:
        entry = read(path)
        process = running(entry) if entry is not None else None
        if process is not None:
            found[path] = process
    stop(*found.values(), grace_s=grace_s)
    for path in paths:
        path.unlink(missing_ok=True)
    return {path: process.pid for path, process in found.items()}


def stop_leftover(path: Path, *, grace_s: float = STOP_GRACE_S) -> int | None:
    """Stop the process a pid file names, if it still runs; the pid it had, else None. The file goes either way."""
    return stop_leftovers(path, grace_s=grace_s).get(path)
