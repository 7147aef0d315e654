"""Commands the services register with `mtm` through entry points (`mtm check`, `mtm reconcile`), run on files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TextIO

from mtm.contracts.events import Reconciliation

COMMANDS = "mtm.commands"
TOOLS = "mtm.tools"
READERS = "mtm.readers"
BUNDLE_READER = "discharge-bundle"

Render = Callable[[Reconciliation], dict[str, Any]]
Reader = Callable[[Path], Reconciliation]


class ServiceCommandError(Exception):
    """A service's command cannot run: what is missing and which package provides it."""


def _registered(group: str) -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=group)}


def _help(entry: EntryPoint) -> str:
    try:
        factory = entry.load()
    except Exception as exc:  # a broken service package must not take the other commands down with it
        return f"(from {entry.value}; cannot be loaded: {type(exc).__name__})"
    return (factory.__doc__ or entry.value).strip().splitlines()[0]


def add_service_commands(sub: Any, taken: Iterable[str]) -> None:
    """A sub-command per registered command name (built-in names win), so the CLI runs them importing no service.

    A service registers in its pyproject, speaking `mtm.contracts` only, as the services do over NATS:
    - group `mtm.commands`: name → a factory returning `Reconciliation -> dict` (its docstring is the help line);
      `mtm NAME FILE...` prints `{"source": FILE, **dict}` per file;
    - group `mtm.readers`: `discharge-bundle` → `Path -> Reconciliation`, raising ValueError saying what and where;
    - group `mtm.tools`: name → `argv -> exit code`, a command with arguments of its own (`mtm kb coverage`).
    A factory with `reads = "path"` gets each file's path instead (it reads other bundles than discharges), and
    one with `options` (argparse flag, keyword arguments) takes them as its own keyword arguments.
    """
    taken = set(taken)
    for name, entry in sorted(_registered(COMMANDS).items()):
        if name in taken:
            continue
        taken.add(name)
        parser = sub.add_parser(name, help=_help(entry))
        parser.add_argument("files", nargs="+")
        options = _options(entry)
        for flag, spec in options:
            parser.add_argument(flag, **spec)
        dests = [flag.lstrip("-").replace("-", "_") for flag, _ in options]
        parser.set_defaults(
            run=lambda args, entry=entry, dests=dests: run_service_command(
                entry, args.files, options={d: getattr(args, d) for d in dests}
            )
        )
    for name, entry in sorted(_registered(TOOLS).items()):
        if name in taken:
            continue
        parser = sub.add_parser(name, help=_help(entry), add_help=False)
        parser.add_argument("argv", nargs=argparse.REMAINDER)
        parser.set_defaults(run=lambda args, entry=entry: int(entry.load()(args.argv)))


def _options(entry: EntryPoint) -> tuple[tuple[str, dict[str, Any]], ...]:
    try:
        return tuple(getattr(entry.load(), "options", ()))
    except Exception:  # a broken service package must not take the other commands down with it
        return ()


def _reader() -> Reader:
    entry = _registered(READERS).get(BUNDLE_READER)
    if entry is None:
        raise ServiceCommandError(f"no {READERS} entry point {BUNDLE_READER!r}: install mtm-reconciliation")
    reader: Reader = entry.load()
    return reader


def run_service_command(
    entry: EntryPoint, paths: Iterable[str], out: TextIO | None = None, options: dict[str, Any] | None = None
) -> int:
    """Each file read and rendered on its own line; a file that fails gets `{"source", "error"}` and exit code 1."""
    out = out or sys.stdout
    factory = entry.load()
    read: Callable[[Path], Any] = (lambda path: path) if getattr(factory, "reads", None) == "path" else _reader()
    render: Callable[[Any], dict[str, Any]] = factory(**(options or {}))
    status = 0
    for name in paths:
        try:
            line = {"source": name, **render(read(Path(name)))}
        except ValueError as exc:
            line = {"source": name, "error": str(exc)}
            status = 1
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        out.flush()
    return status
