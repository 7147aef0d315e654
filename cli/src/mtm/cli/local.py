"""`mtm up` and `mtm reset`: the local stack `mtm up` runs on its data directory, and deleting its data."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import rich_click as click

from mtm.cli import output
from mtm.cli.errors import Refused, UsageError
from mtm.cli.output import json_option
from mtm.cli.stack import data_dir

NO_DEVSTACK = (
    "the dev stack (mtm-devstack: embedded NATS and Postgres) is not installed. In a checkout, `make run` or "
    "`uv sync --all-packages` installs it with the dev dependency group; elsewhere, install mtm-devstack next to "
    "mtm-cli."
)
# What `mtm up` keeps under the data directory that `mtm reset` deletes: the embedded servers' stores, the
# service logs, pid files, the stack's URLs, the saved login. The keys and the demo accounts' passwords stay.
RESET_ENTRIES = ("embedded", "logs", "run", "stack.json", "token")
POSTGRES_STOP_S = 30.0


def _devstack_missing(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").startswith("mtm.devstack")


@click.command("up")
@click.option("--demo", is_flag=True, help="Also make the demo accounts and publish two discharges.")
@click.option("--exit-after-demo", is_flag=True, help="Stop the stack when the demo is done.")
@json_option
def up(demo: bool, exit_after_demo: bool, as_json: bool) -> int:
    """Start NATS, Postgres, the services and the web app; Ctrl-C stops everything.

    With --json, progress goes to stderr and one JSON line with the stack's URLs to stdout once it is up."""
    try:
        from mtm.cli.up import StackInfo
        from mtm.cli.up import up as run_stack
    except ModuleNotFoundError as exc:
        if not _devstack_missing(exc):
            raise
        raise UsageError(f"`mtm up` needs {NO_DEVSTACK}") from exc

    def say(text: str) -> None:
        if as_json:
            output.note(text)
        else:
            print(text, flush=True)

    async def announce(info: StackInfo) -> int:
        # No credentials: the `mtm` commands find the CLI user's in stack.json (readable by its owner only).
        output.json_line(
            {
                "nats_url": info.nats.url,
                "nats_user": info.nats.user,
                "web_url": info.web_url,
                "data_dir": str(data_dir()),
            }
        )
        return 0

    if not demo:
        return run_stack(say, demo=announce if as_json else None)
    from mtm.cli.demo import DemoRun

    run = DemoRun(say).start()

    async def announced_demo(info: StackInfo) -> int:
        if as_json:
            await announce(info)
        return await run.run(info)

    try:
        return run_stack(say, extra_env=run.env(), demo=announced_demo, exit_after_demo=exit_after_demo)
    finally:
        run.stop()


def _stop_postgres(folder: Path) -> int | None:
    """A Postgres a killed `mtm up` left running on the data directory (`mtm up` would adopt it): fast shutdown."""
    pid_file = folder / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError, IndexError):
        return None
    deadline = time.monotonic() + POSTGRES_STOP_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


def _stop_leftovers(base: Path) -> list[str]:
    """What a killed `mtm up` may have left running on this data directory, stopped as the next `mtm up` would."""
    from mtm.cli.up import Stack
    from mtm.devstack import processes

    stopped: list[str] = []
    Stack(base).stop_leftovers(stopped.append)
    nats = processes.stop_leftover(base / "embedded" / "nats" / "nats-server.pid")
    if nats is not None:
        stopped.append(f"stopped nats-server (pid {nats}), left running by an earlier mtm up")
    postgres = _stop_postgres(base / "embedded" / "postgres")
    if postgres is not None:
        stopped.append(f"stopped postgres (pid {postgres}), left running by an earlier mtm up")
    return stopped


@click.command("reset")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; delete at once.")
@json_option
def reset(yes: bool, as_json: bool) -> int:
    """Delete the local stack's data: the embedded NATS and Postgres stores, logs and the saved login, under the
    data directory (MTM_DATA_DIR, else the user's data folder). Refused while `mtm up` runs on it.

    Asks first unless --yes. The signing keys and the demo accounts' passwords stay; servers named by
    MTM_NATS_URL / MTM_DATABASE_URL are never touched."""
    try:
        from mtm.devstack.lock import AlreadyRunning, DataDirLock
    except ModuleNotFoundError as exc:
        if not _devstack_missing(exc):
            raise
        raise UsageError(f"there is no local stack here: `mtm reset` needs {NO_DEVSTACK}") from exc
    base = data_dir()
    found = [base / name for name in RESET_ENTRIES if (base / name).exists()]
    if not found:
        if as_json:
            output.print_json({"data_dir": str(base), "removed": [], "stopped": []})
        else:
            output.line(f"nothing to reset in {base}")
        return 0
    try:
        lock = DataDirLock(base).acquire()
    except AlreadyRunning as exc:
        raise Refused(f"{exc} (mtm reset deletes what it runs on)") from exc
    try:
        if not yes:
            output.note(f"mtm reset deletes, in {base}: " + ", ".join(p.name for p in found))
            try:
                click.confirm("Delete the local stack's data?", abort=True, err=True)
            except click.Abort as exc:
                raise Refused("nothing deleted") from exc
        stopped = _stop_leftovers(base)
        for path in found:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    finally:
        lock.release()
    if as_json:
        output.print_json({"data_dir": str(base), "removed": [p.name for p in found], "stopped": stopped})
    else:
        for text in stopped:
            output.note(text)
        output.line(f"reset {base}: removed " + ", ".join(p.name for p in found))
    return 0


COMMANDS = (up, reset)
