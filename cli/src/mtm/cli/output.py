"""How `mtm` prints: tables with headers for people, JSON for scripts (`--json`), one line on stderr for errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import rich_click as click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mtm.cli.errors import OK, OUTCOME_EXIT
from mtm.contracts import CommandReply

# Piped output is not cut to a terminal's width: a row stays one line for grep, head and friends.
PIPE_WIDTH = 4096

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table for people."
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away: `mtm`'s own handler ends quietly with the SIGPIPE code (rich would exit 1)."""
        self.quiet = True
        raise BrokenPipeError


@functools.cache
def out() -> Console:
    terminal = sys.stdout.isatty()
    return _Console(highlight=False, soft_wrap=not terminal, width=None if terminal else PIPE_WIDTH)


@functools.cache
def err() -> Console:
    return _Console(stderr=True, highlight=False, soft_wrap=True)


def line(text: str) -> None:
    """A line for people on stdout, printed as it is (no markup)."""
    out().print(Text(text))


def note(text: str) -> None:
    """Progress and side remarks on stderr, so stdout stays what the command produces."""
    err().print(Text(text))


def error(message: str) -> None:
    err().print(Text.assemble(("mtm: ", "bold red"), message))


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def write_bytes(content: bytes) -> None:
    sys.stdout.buffer.write(content)
    sys.stdout.flush()


def json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple) and all(not isinstance(v, dict | list | tuple) for v in value):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None, empty: str = "nothing"
) -> None:
    """Rows under a header; `empty` is said (on stderr) when there are none, so stdout stays empty."""
    rows = list(rows)
    if not rows:
        note(f"{title}: {empty}" if title else empty)
        return
    shown = Table(
        *columns, box=box.SIMPLE_HEAD, show_edge=False, title=title, title_justify="left", header_style="bold"
    )
    for row in rows:
        shown.add_row(*(Text(cell(v)) for v in row))
    out().print(shown)


def fields(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """One record as a two-column table."""
    table(("Field", "Value"), list(pairs), title=title)


def _is_record_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def document(value: Any, *, title: str | None = None) -> None:
    """Any JSON document for people: plain fields as a two-column table, lists of records as tables, nested
    records as their own titled tables. Used for what a service returns (`mtm record`, `mtm check`, ...)."""
    if _is_record_list(value):
        columns = list(dict.fromkeys(key for item in value for key in item))
        table(columns, ([item.get(c) for c in columns] for item in value), title=title)
        return
    if not isinstance(value, dict):
        line(cell(value))
        return
    plain = [(k, v) for k, v in value.items() if not isinstance(v, dict) and not _is_record_list(v)]
    if plain:
        fields(plain, title=title)
    for key, nested in value.items():
        if isinstance(nested, dict) or _is_record_list(nested):
            document(nested, title=f"{title} / {key}" if title else key)


def reply_failed(reply: CommandReply) -> int:
    """Say why a service turned the request down; the exit code for its outcome."""
    hint = ""
    if reply.outcome == "unauthorized":
        hint = " (sign in again: mtm login USER)"
    error(f"{reply.outcome.replace('_', ' ')}: {reply.message or 'no reason given'}{hint}")
    return OUTCOME_EXIT.get(reply.outcome, OUTCOME_EXIT["error"])


def show_reply(reply: CommandReply, as_json: bool, render: Callable[[CommandReply], None] | None = None) -> int:
    """The reply as JSON (whole, as before), or rendered for people; the exit code for its outcome."""
    if as_json:
        print_json(reply.model_dump(mode="json"))
        return OUTCOME_EXIT.get(reply.outcome, OUTCOME_EXIT["error"]) if not reply.ok else OK
    if not reply.ok:
        return reply_failed(reply)
    (render or done)(reply)
    return OK


def done(reply: CommandReply) -> None:
    """A command's acknowledgement: what it did and where the thing stands now."""
    parts = [reply.message or reply.outcome]
    if reply.resource_id:
        parts.append(reply.resource_id)
    if reply.status:
        parts.append(f"now {reply.status}")
    line(" - ".join(parts))


def rows_of(data: Any, key: str | None = None) -> list[Mapping[str, Any]]:
    found = data.get(key, []) if key and isinstance(data, dict) else data
    return [r for r in (found or []) if isinstance(r, dict)]
