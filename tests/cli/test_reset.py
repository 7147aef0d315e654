"""`mtm reset`: deletes what `mtm up` keeps under the data directory, asks first, never while `mtm up` runs on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtm.devstack.lock import DataDirLock

pytestmark = pytest.mark.unit


def mtm(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTM_")}
    return subprocess.run(
        [sys.executable, "-m", "mtm.cli.main", *args],
        env={**env, "MTM_DATA_DIR": str(data_dir)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """What a stopped `mtm up` leaves: the embedded stores, logs, the stack's URLs, a login, keys, passwords."""
    base = tmp_path / "mtm"
    for folder in ("embedded/nats/jetstream", "embedded/postgres/pgdata", "logs", "run", "keys"):
        (base / folder).mkdir(parents=True)
    (base / "embedded" / "postgres" / "pgdata" / "PG_VERSION").write_text("16\n")
    (base / "logs" / "review.log").write_text("{}\n")
    (base / "stack.json").write_text(json.dumps({"nats_url": "nats://127.0.0.1:1"}))
    (base / "token").write_text("a-token")
    (base / "keys" / "actor-signing.pem").write_text("key")
    (base / "demo-accounts.json").write_text("{}")
    return base


def test_reset_asks_and_deletes_nothing_unless_told_yes(data_dir: Path) -> None:
    declined = mtm(data_dir, "reset", stdin="n\n")
    assert declined.returncode == 1 and "nothing deleted" in declined.stderr
    no_answer = mtm(data_dir, "reset")
    assert no_answer.returncode == 1 and "Traceback" not in no_answer.stderr
    assert (data_dir / "embedded").exists() and (data_dir / "token").exists()


def test_reset_deletes_the_stack_data_and_keeps_keys_and_passwords(data_dir: Path) -> None:
    result = mtm(data_dir, "reset", stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["demo-accounts.json", "keys", "up.lock"]
    again = mtm(data_dir, "reset", "--yes", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["removed"] == []


def test_reset_yes_and_json_for_scripts(data_dir: Path) -> None:
    result = mtm(data_dir, "reset", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(report["removed"]) == ["embedded", "logs", "run", "stack.json", "token"]
    assert report["data_dir"] == str(data_dir) and report["stopped"] == []


def test_reset_is_refused_while_mtm_up_holds_the_data_directory(data_dir: Path) -> None:
    lock = DataDirLock(data_dir).acquire()  # as the running `mtm up` holds it
    try:
        result = mtm(data_dir, "reset", "--yes")
    finally:
        lock.release()
    assert result.returncode == 1
    assert f"pid {os.getpid()}" in result.stderr and "stop it first" in result.stderr
    assert (data_dir / "embedded").exists() and (data_dir / "token").exists()
