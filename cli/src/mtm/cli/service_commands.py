"""Commands the services lend to `mtm` through entry points (`mtm check`, `mtm reconcile`, `mtm kb`), found at run
time, so the CLI imports no service.

A service registers in its pyproject, speaking `mtm.contracts` only, as the services do over NATS:
- group `mtm.commands`: name → a factory returning `Reconciliation -> dict` (its docstring is the help line);
  `mtm NAME FILE...` shows the dict per file (`--json`: `{"source": FILE, **dict}` per line);
- group `mtm.readers`: `discharge-bundle` → `Path -> Reconciliation`, raising ValueError saying what and where
  (and `discharge-intake`, `fill-intake`: bytes → patient ids, what `mtm publish-discharge` checks files with);
- group `mtm.tools`: name → `argv -> exit code`, a command with arguments of its own (`mtm kb coverage`).
A factory with `reads = "path"` gets each file's path instead (it reads other bundles than discharges), and
one with `options` (argparse flag, keyword arguments) takes them as its own keyword arguments.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TextIO

import rich_click as click

from mtm.cli import output
from mtm.cli.errors import REFUSED, CliError
from mtm.contracts.events import Reconciliation

COMMANDS = "mtm.commands"
TOOLS = "mtm.tools"
READERS = "mtm.readers"
BUNDLE_READER = "discharge-bundle"

Render = Callable[[Reconciliation], dict[str, Any]]
Reader = Callable[[Path], Reconciliation]


class ServiceCommandError(CliError):
    """A service's command cannot run: what is missing and which package provides it."""


def registered(group: str) -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=group)}


def _help(entry: EntryPoint) -> str:
    try:
        factory = entry.load()
    except Exception as exc:  # a broken service package must not take the other commands down with it
        return f"(from {entry.value}; cannot be loaded: {type(exc).__name__})"
    return " ".join((factory.__doc__ or entry.value).split())


def lent_names(taken: Iterable[str]) -> list[str]:
    """The names the services lend that no built-in command has (built-in names win)."""
    taken = set(taken)
    return sorted((set(registered(COMMANDS)) | set(registered(TOOLS))) - taken)


def lent_command(name: str) -> click.Command | None:
    """The click command for a lent name, built when it is asked for (`mtm NAME`, `mtm --help`)."""
    if (entry := registered(COMMANDS).get(name)) is not None:
        return _file_command(name, entry)
    if (entry := registered(TOOLS).get(name)) is not None:
        return _tool_command(name, entry)
    return None


_ARGPARSE_TYPES: dict[Any, Any] = {int: click.INT, float: click.FLOAT, str: click.STRING}


def _option(flag: str, spec: dict[str, Any]) -> click.Option:
    """An argparse-style option of a service's command (`("--year", {"type": int, "help": ...})`) for click."""
    dest = flag.lstrip("-").replace("-", "_")
    if spec.get("action") == "store_true":
        return click.Option([flag, dest], is_flag=True, help=spec.get("help"))
    kind = click.Choice(spec["choices"]) if "choices" in spec else _ARGPARSE_TYPES.get(spec.get("type"), click.STRING)
    return click.Option(
        [flag, dest],
        type=kind,
        default=spec.get("default"),
        required=bool(spec.get("required")),
        help=spec.get("help"),
        metavar=spec.get("metavar"),
    )


def _options(entry: EntryPoint) -> tuple[tuple[str, dict[str, Any]], ...]:
    try:
        return tuple(getattr(entry.load(), "options", ()))
    except Exception:  # a broken service package must not take the other commands down with it
        return ()


def _file_command(name: str, entry: EntryPoint) -> click.Command:
    options = _options(entry)
    dests = [flag.lstrip("-").replace("-", "_") for flag, _ in options]

    def run(files: tuple[str, ...], as_json: bool, **values: Any) -> int:
        return run_service_command(entry, files, options={d: values[d] for d in dests}, as_json=as_json)

    return click.RichCommand(
        name,
        callback=run,
        help=f"{_help(entry)}\n\nNeeds no running stack. Exit code 1 when any file could not be read.",
        params=[
            click.RichArgument(["files"], nargs=-1, required=True, help="FHIR R4 bundle files (JSON)."),
            *(_option(flag, spec) for flag, spec in options),
            click.RichOption(
                ["--json", "as_json"], is_flag=True, help="One JSON object per file, for scripts, instead of tables."
            ),
        ],
    )


def _tool_command(name: str, entry: EntryPoint) -> click.Command:
    def run(argv: tuple[str, ...]) -> int:
        return int(entry.load()(list(argv)))

    return click.RichCommand(
        name,
        callback=run,
        help=_help(entry) + " (its own arguments: `mtm " + name + " --help`)",
        params=[click.RichArgument(["argv"], nargs=-1, type=click.UNPROCESSED, help="The tool's own arguments.")],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
        add_help_option=False,
    )


def _reader() -> Reader:
    entry = registered(READERS).get(BUNDLE_READER)
    if entry is None:
        raise ServiceCommandError(f"no {READERS} entry point {BUNDLE_READER!r}: install mtm-reconciliation")
    reader: Reader = entry.load()
    return reader


def run_service_command(
    entry: EntryPoint,
    paths: Iterable[str],
    out: TextIO | None = None,
    options: dict[str, Any] | None = None,
    *,
    as_json: bool = True,
) -> int:
    """Each file read and rendered on its own; a file that fails gets `{"source", "error"}` and exit code 1."""
    factory = entry.load()
    read: Callable[[Path], Any] = (lambda path: path) if getattr(factory, "reads", None) == "path" else _reader()
    render: Callable[[Any], dict[str, Any]] = factory(**(options or {}))
    status = 0
    for name in paths:
        try:
            line = {"source": name, **render(read(Path(name)))}
        except ValueError as exc:
            line = {"source": name, "error": str(exc)}
            status = REFUSED
        if as_json or out is not None:
            (out or sys.stdout).write(json.dumps(line, ensure_ascii=False) + "\n")
            (out or sys.stdout).flush()
        elif "error" in line:
            output.error(f"{name}: {line['error']}")
        else:
            output.document({k: v for k, v in line.items() if k != "source"}, title=name)
    return status
