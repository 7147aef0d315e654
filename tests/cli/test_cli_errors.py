"""`mtm` as a person meets it without a stack: one clear line and the documented exit code, never a traceback.

Exit codes: 0 done, 1 refused, 2 usage, 3 unavailable; a broken pipe ends quietly (141, as other Unix tools).
Each command runs in its own process, as a person runs it; the subprocess timeout only guards against a hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
DISCHARGE = REPO / "cli" / "src" / "mtm" / "cli" / "demo_data" / "fhir-discharge.json"
SYNTHEA = sorted((REPO / "data" / "synthea" / "bundles").glob("*.json"))
HANG_GUARD_S = 60
TASK = "0b6c2f4e-8f5a-4a43-9d1e-2c4b0f5a7e11"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Nothing listens where NATS is looked for; a token is there, so the connection is what fails."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MTM_")}
    return {
        **clean,
        "MTM_DATA_DIR": str(tmp_path / "data"),
        "MTM_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "MTM_TOKEN": "not-checked-before-the-connection",
        "MTM_WEB_URL": f"http://127.0.0.1:{free_port()}",
        "MTM_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "MTM_PASSWORD": "a-password-9",
    }


def mtm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtm.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("tasks",), id="tasks"),
        pytest.param(("publish-discharge", str(DISCHARGE)), id="publish-discharge"),
        pytest.param(("medlist", "Patient/p1"), id="medlist"),
        pytest.param(("claim", TASK), id="claim"),
        pytest.param(("referrals", "--json"), id="referrals --json"),
        pytest.param(("dead-letters", "list", "reconciliation"), id="dead-letters list"),
        pytest.param(("rebuild", "--all"), id="rebuild"),
        pytest.param(("erase", "Patient/p1", "--reason", "request of the patient"), id="erase"),
        pytest.param(("fhir", "export", "p1"), id="fhir export"),
    ],
)
def test_with_the_stack_down_a_command_says_so_in_one_line_and_exits_3(env: dict[str, str], args: tuple[str]) -> None:
    result = mtm(env, *args)
    assert result.returncode == 3, result.stderr
    line = one_clear_line(result)
    assert "cannot reach NATS" in line and "is the stack up" in line and env["MTM_NATS_URL"] in line
    assert result.stdout == ""


def test_a_server_that_accepts_but_never_speaks_nats_is_unavailable_too(env: dict[str, str]) -> None:
    """A port that takes the connection and says nothing (a firewall, another program): the attempt times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
        url = f"nats://127.0.0.1:{server.getsockname()[1]}"
        result = mtm({**env, "MTM_NATS_URL": url}, "tasks")
        for conn in accepted:
            conn.close()
    assert result.returncode == 3
    assert "cannot reach NATS" in one_clear_line(result)


def test_login_and_accounts_with_the_stack_down_exit_3(env: dict[str, str]) -> None:
    login = mtm(env, "login", "ana")
    assert login.returncode == 3 and "cannot reach the web app" in one_clear_line(login)
    users = mtm(env, "user", "list")
    assert users.returncode == 3 and "cannot reach the web app's database" in one_clear_line(users)


def test_not_logged_in_is_denied_before_anything_is_sent(env: dict[str, str]) -> None:
    result = mtm({k: v for k, v in env.items() if k != "MTM_TOKEN"}, "tasks")
    assert result.returncode == 1
    assert "not logged in" in one_clear_line(result) and "mtm login" in result.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        pytest.param(("medlist", "Patient/not an id"), "is not a patient id", id="patient with spaces"),
        pytest.param(("record", "Patient/"), "is not a patient id", id="empty patient"),
        pytest.param(("claim", "task-1"), "is not a task id", id="task not a UUID"),
        pytest.param(("answer", "42", "--decision", "accepted"), "is not a referral id", id="referral not a UUID"),
        pytest.param(("delivered", TASK, "--method", "mail", "--on", "tomorrow"), "is not a date", id="bad date"),
        pytest.param(("dead-letters", "show", "pharmacy", "1"), "pharmacy", id="no such service"),
        pytest.param(("tasks", "--limit", "0"), "--limit", id="limit out of range"),
        pytest.param(("rebuild",), "--all", id="rebuild needs a service"),
        pytest.param(("erase", "p1", "--reason", "x" * 201), "reason", id="erase reason over its limit"),
        pytest.param(("erase", "p 1", "--reason", "asked"), "is not a patient id", id="erase bad patient"),
        pytest.param(("no-such-command",), "No such command", id="unknown command"),
    ],
)
def test_a_bad_id_or_argument_is_a_usage_error_naming_it(env: dict[str, str], args: tuple[str], said: str) -> None:
    result = mtm(env, *args)
    assert result.returncode == 2, result.stderr
    assert said in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_both_forms_of_a_patient_id_are_taken(env: dict[str, str]) -> None:
    """`Patient/p1` (what `mtm tasks` prints) and `p1` pass the argument check; here the stack is what is missing."""
    for patient in ("Patient/p1", "p1"):
        assert mtm(env, "medlist", patient).returncode == 3
        assert mtm(env, "tasks", "--patient", patient).returncode == 3


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("publish-discharge", "{missing}"), id="publish-discharge"),
        pytest.param(("publish-fill", "{missing}"), id="publish-fill"),
        pytest.param(("complete", TASK, "--record", "{missing}"), id="complete --record"),
        pytest.param(("dead-letters", "redrive", "reconciliation", "3", "--body", "{missing}"), id="redrive --body"),
    ],
)
def test_a_missing_file_is_named_with_exit_2(env: dict[str, str], tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = str(tmp_path / "nowhere" / "discharge.json")
    result = mtm(env, *(a.replace("{missing}", missing) for a in args))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "discharge.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_discharge_the_service_would_dead_letter_is_refused_before_anything_is_sent(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Read with reconciliation's own intake reader: a bundle without a Patient, an invalid native event.

    NATS is down here: a refusal that needed it would exit 3; nothing was sent, not even a good file's."""
    bundle = json.loads(DISCHARGE.read_text())
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    no_patient = tmp_path / "no-patient.json"
    no_patient.write_text(json.dumps(bundle))
    native = tmp_path / "native.json"
    native.write_text(json.dumps({"type": "TransitionOfCareRecorded", "data": {"patient": {}}}))
    result = mtm(env, "publish-discharge", str(DISCHARGE), str(no_patient), str(native))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{no_patient}: refused" in result.stderr and "no Patient resource" in result.stderr
    assert f"{native}: refused" in result.stderr
    assert "nothing published (2 of 3 files refused)" in result.stderr
    as_json = mtm(env, "publish-discharge", "--json", str(no_patient))
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"file": str(no_patient), "refused": "Bundle: entry: no Patient resource"}


def test_a_fill_the_intake_would_dead_letter_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    fill = json.loads((REPO / "contracts" / "samples" / "medication_dispensed.v1.json").read_text())
    fill["data"].pop("days_supply")
    path = tmp_path / "fill.json"
    path.write_text(json.dumps(fill))
    result = mtm(env, "publish-fill", str(path))
    assert result.returncode == 1
    assert "days_supply" in result.stderr and "Traceback" not in result.stderr


def test_a_closed_pipe_ends_quietly(env: dict[str, str]) -> None:
    """`mtm ... | head`: the reader goes away first; no traceback, no 'Exception ignored', the SIGPIPE code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mtm.cli.main", "check", *map(str, SYNTHEA[:3])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    try:
        code = process.wait(timeout=HANG_GUARD_S)
    finally:
        process.kill()
    assert code == 141
    assert process.stderr.read() == ""


def test_version_and_help(env: dict[str, str]) -> None:
    version = mtm(env, "--version")
    assert version.returncode == 0 and version.stdout.startswith("mtm ")
    top = mtm(env, "--help")
    assert top.returncode == 0
    for name in ("dead-letters", "reset", "publish-discharge", "tasks", "check", "Exit codes"):
        assert name in top.stdout


def _every_command() -> Iterator[tuple[str, object]]:
    import click

    from mtm.cli.main import cli

    def walk(prefix: str, command: click.Command, ctx: click.Context) -> Iterator[tuple[str, object]]:
        yield prefix, command
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                yield from walk(f"{prefix} {name}", sub, click.Context(sub, parent=ctx, info_name=name))

    yield from walk("mtm", cli, click.Context(cli, info_name="mtm"))


def test_every_command_argument_and_option_has_help_and_every_command_takes_json() -> None:
    import click

    missing = []
    for path, command in _every_command():
        assert isinstance(command, click.Command)
        if not command.help:
            missing.append(path)
        for param in command.params:
            if not getattr(param, "help", None) and param.name not in ("help", "version"):
                missing.append(f"{path} {param.name}")
        takes_json = any(p.name == "as_json" for p in command.params)
        own_arguments = path == "mtm kb"  # a tool of review's with its own --json
        if not isinstance(command, click.Group) and not own_arguments:
            assert takes_json, f"{path} has no --json"
    assert missing == []
