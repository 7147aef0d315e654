"""`mtm`: run the stack, publish discharges, act as a pharmacist's or physician's tool, run the services' commands.

Every command prints tables for people and JSON with `--json`; errors are one line on stderr, never a traceback.
Exit codes: 0 done, 1 refused (not found, conflict, denied, invalid), 2 usage, 3 unavailable (the stack is not up).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import rich_click as click

from mtm.cli import accounts, admin, clinical, dead_letters, intake, local, output, program, reviews
from mtm.cli.errors import BROKEN_PIPE, INTERRUPTED, OK, REFUSED, CliError
from mtm.cli.service_commands import lent_command, lent_names

EPILOG = (
    "Exit codes: 0 done; 1 refused (not found, conflict, denied, invalid content); 2 usage (a bad command line, id, "
    "date or file); 3 unavailable (NATS, a service, the web app or the database does not answer). "
    "Commands that talk to the services send the token `mtm login` saved (or MTM_TOKEN)."
)
PANELS = (
    ("Local stack", ["up", "reset", "login", "user"]),
    ("Intake", ["publish-discharge", "publish-fill", "replay-synthea"]),
    (
        "Pharmacist",
        ["tasks", "claim", "release", "reassign", "complete", "override", "outcome", "delivered", "record", "medlist"],
    ),
    ("Physician", ["referrals", "answer"]),
    ("Program and reports", ["program", "disenroll", "report", "alert-stats", "map", "fhir"]),
    ("Admin", ["rebuild", "erase", "dead-letters"]),
)


def _quiet_broken_pipe() -> None:
    """The reader went away (`mtm tasks | head`): nothing more is written, and nothing said about it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


class MtmGroup(click.RichGroup):
    """The `mtm` command: built-in commands, then the ones services lend (entry points, loaded when asked for).

    It turns what goes wrong into one line and an exit code: `CliError`s with theirs, a command's returned code,
    a broken pipe quietly; anything unexpected as one line too (MTM_DEBUG=1 shows the traceback)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *lent_names(self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or lent_command(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            code = super().invoke(ctx)
        except CliError as exc:
            output.error(str(exc))
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            _quiet_broken_pipe()
            ctx.exit(BROKEN_PIPE)
        except KeyboardInterrupt:
            output.note("interrupted")
            ctx.exit(INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("MTM_DEBUG"):
                raise
            output.error(f"unexpected error ({type(exc).__name__}); please report it (MTM_DEBUG=1 shows the traceback)")
            ctx.exit(REFUSED)
        if isinstance(code, int) and code != OK:
            ctx.exit(code)
        return code


@click.group(cls=MtmGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mtm-cli", prog_name="mtm", message="%(prog)s %(version)s")
@click.rich_config(
    help_config=click.RichHelpConfiguration(
        command_groups={"mtm": [{"name": name, "commands": commands} for name, commands in PANELS]},
        show_arguments=True,
        commands_panel_title="Lent by the services (files, no stack needed)",
    )
)
def cli() -> None:
    """mtm: medication therapy management across care transitions."""


for module in (local, accounts, intake, reviews, clinical, program, admin, dead_letters):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `mtm` with these arguments (the process's own when None); the exit code."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="mtm", standalone_mode=False)
    except click.UsageError as exc:
        # One line, like every other error (click frames usage errors in a box that wraps long paths).
        where = exc.ctx.command_path if exc.ctx is not None else "mtm"
        output.error(f"{exc.format_message()} (see `{where} --help`)")
        return exc.exit_code
    except click.ClickException as exc:
        output.error(exc.format_message())
        return exc.exit_code
    except click.Abort:
        output.note("interrupted")
        return INTERRUPTED
    except SystemExit as exc:
        if exc.code is None:
            return OK
        return exc.code if isinstance(exc.code, int) else REFUSED
    except BrokenPipeError:
        _quiet_broken_pipe()
        return BROKEN_PIPE
    return code if isinstance(code, int) else OK


if __name__ == "__main__":
    sys.exit(main())
